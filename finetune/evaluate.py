"""Score a model's tool calling before and after fine-tuning, with the project's one BFCL checker.

Evaluation sets:

* the held-out split (``--eval FILE``, e.g. ``eval.jsonl`` from ``synth --holdout tools``): every assistant turn of
  a conversation is one item, prompted with the gold history before it (teacher forcing); ``--limit`` samples
  turns at random (seeded). A turn with gold calls expects calls; a text turn (a final answer after tool results,
  small talk, a request no tool fits) expects none;
* BFCL v3 ``simple`` / ``multiple`` (and the other single-turn categories) from `constrained_fc.eval.data.load_bfcl`.

Each item runs in two modes: **unconstrained** (plain ``model.generate`` on `render_prompt`, greedy, the reply
read with `parse_lenient`) and **constrained** (`constrained_fc.runtime.decoding.generate` with ``tool_choice="auto"``).
Metrics (`aggregate`):

* decision accuracy: a call is emitted exactly when the gold turn has calls;
* call accuracy: on turns with gold calls, `check_calls` against the gold calls in BFCL's
  ``[{name: {param: [value]}}]`` form (one call: category ``multiple``; several: ``parallel_multiple``, order-free);
* invalid-call rate: emitted calls that `hallucination_kind` flags (unknown function / schema violation), out of
  all emitted calls;
* turn accuracy: the whole turn right (correct calls, or correctly no call: `check_calls(..., "irrelevance")`).

Retention: on tool-free chat prompts (`PLAIN_PROMPTS`), the reference answers are the *first* (base) model's
greedy answers; for each model, the mean per-token loss of those answers and the share of prompts where its own
greedy answer equals the reference. A fine-tune that leaves plain chat alone keeps both close to the base's.

In ``auto`` mode the constrained decoder samples exactly like greedy decoding until the model emits the trigger
token (``[TOOL_CALLS]``); so when the unconstrained reply contains no trigger, the constrained reply is that same
text with no calls, and it is reused instead of decoded again (`reuse`, on by default; counted in results).
"""
from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from constrained_fc.eval.checker import check_calls, hallucination_kind, parse_lenient
from constrained_fc.eval.data import BFCL_CATEGORIES

MODES = ("unconstrained", "constrained")
SET_TITLES = {"heldout": "held-out split", "sealtools_unseen": "Seal-Tools unseen tools",
              **{f"bfcl_{c}": f"BFCL {c}" for c in BFCL_CATEGORIES}}

PLAIN_PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis in two sentences.",
    "Give me three tips for sleeping better.",
    "What is 12 times 7?",
    "How do you say 'good morning' in Spanish?",
    "Who wrote Romeo and Juliet?",
    "Suggest a name for a pet goldfish.",
    "What does a CPU do in a computer?",
    "Summarize the story of Cinderella in one sentence.",
    "How many days are there in a leap year?",
    "Write a short thank-you note to a teacher.",
)


# ------------------------------------------------------------------------------------------------- items
RESULTS_TITLE = "# Fine-tuning evaluation"  # the first line of results.md (`finetune card` checks it)


@dataclass
class EvalItem:
    """One prompt to answer: `messages` (history ending before the turn), `tools`, and the gold answer as BFCL
    ground truth (`ground_truth` empty when the gold turn is text) with the checker `category` to use."""

    set: str
    id: str
    messages: list[dict]
    tools: list
    ground_truth: list[dict] = field(default_factory=list)
    category: str = "multiple"
    objective: str = ""

    @property
    def expects_call(self) -> bool:
        return bool(self.ground_truth)


def to_ground_truth(calls: Iterable[Any]) -> list[dict]:
    """Gold calls (``{"name", "arguments"}`` dicts, OpenAI tool calls, or (name, args) pairs) -> BFCL's
    ``[{name: {param: [value]}}]``: each given argument's value is its only acceptable value, and parameters the
    gold call leaves out are not expected (BFCL's rule: a parameter outside the ground truth fails the call)."""
    out = []
    for call in calls:
        if isinstance(call, dict):
            fn = call.get("function") if isinstance(call.get("function"), dict) else call
            name, args = fn.get("name"), fn.get("arguments")
        else:
            name, args = call
        if isinstance(args, str):
            args = json.loads(args) if args.strip() else {}
        out.append({name: {k: [v] for k, v in (args or {}).items()}})
    return out


def category_for(ground_truth: list[dict]) -> str:
    """The checker category for a held-out turn: one call -> ``multiple`` (the function is looked up by the gold
    name among several tools), several -> ``parallel_multiple`` (matched in any order), none -> ``irrelevance``."""
    if not ground_truth:
        return "irrelevance"
    return "multiple" if len(ground_truth) == 1 else "parallel_multiple"


def heldout_items(path: str | Path, limit: int | None = None, seed: int = 0) -> list[EvalItem]:
    """One item per assistant turn of the conversations in `path`; with `limit`, a seeded random sample of the
    turns, so call turns and text turns keep their share in the file (whole conversations would let a small
    sample of single-call conversations hold no text turn at all). Items keep file order."""
    from .data import load_examples

    examples, _ = load_examples(path)
    items: list[EvalItem] = []
    for ex in examples:
        where = ex.meta.get("line", ex.meta.get("index", len(items)))
        for i, msg in enumerate(ex.messages):
            if msg.get("role") != "assistant":
                continue
            gt = to_ground_truth(msg.get("tool_calls") or [])
            items.append(EvalItem(set="heldout", id=f"{where}:{i}", messages=ex.messages[:i], tools=ex.tools,
                                  ground_truth=gt, category=category_for(gt),
                                  objective=str(ex.meta.get("objective", ""))))
    if limit is not None and limit < len(items):
        keep = set(random.Random(f"evaluate:{seed}").sample(range(len(items)), max(limit, 0)))
        items = [it for k, it in enumerate(items) if k in keep]
    return items


def sealtools_unseen_items(limit: int | None = None, data_dir: str | None = None) -> list[EvalItem]:
    """Seal-Tools out-of-domain requests whose every called tool is one no training example calls or offers
    (`finetune.mix` keeps them out); each offered exactly its called tools. First `limit` in file order."""
    from .mix import MixBuilder, MixConfig
    from .sources import SEALTOOLS_HELDOUT_SPLIT, load_sealtools

    builder = MixBuilder(MixConfig(data_dir=data_dir))
    held, _ = load_sealtools(SEALTOOLS_HELDOUT_SPLIT, data_dir, builder.tools)
    items = []
    for ex in held:
        if not set(ex.called_tools) <= builder.heldout_tool_names:
            continue
        gt = to_ground_truth(ex.calls)
        items.append(EvalItem(set="sealtools_unseen", id=str(ex.meta.get("id")), messages=ex.messages[:1],
                              tools=ex.tools, ground_truth=gt, category=category_for(gt),
                              objective="parallel" if len(gt) > 1 else "single"))
    return items[:limit] if limit is not None else items


def bfcl_items(category: str, limit: int | None = None, data_dir: str | None = None) -> list[EvalItem]:
    from constrained_fc.eval.data import load_bfcl

    return [EvalItem(set=f"bfcl_{category}", id=c.id, messages=c.messages, tools=c.functions,
                     ground_truth=c.ground_truth, category=category, objective=category)
            for c in load_bfcl(category, data_dir=data_dir, limit=limit)]


# ----------------------------------------------------------------------------------------------- scoring
def _plain_calls(calls: Any) -> list[tuple[str, Any]] | None:
    """Calls as (name, arguments) pairs; None or [] -> None (no call)."""
    if not calls:
        return None
    out = []
    for c in calls:
        if isinstance(c, dict):
            fn = c.get("function") if isinstance(c.get("function"), dict) else c
            out.append((fn.get("name"), fn.get("arguments")))
        elif hasattr(c, "name") and hasattr(c, "arguments"):
            out.append((c.name, c.arguments))
        else:
            out.append((c[0], c[1]))
    return out


def score(item: EvalItem, calls: Any) -> dict:
    """Score one reply's calls (None / [] = no call) against `item`. Returns ``decision_ok``, ``call_ok`` (None
    on a text turn), ``turn_ok``, ``reason`` (the checker's, when not ok) and ``invalid`` (one
    `hallucination_kind` per emitted call: None, "unknown_function" or "schema_violation")."""
    pairs = _plain_calls(calls)
    emitted = pairs is not None
    result = check_calls(pairs, item.tools, item.ground_truth,
                         item.category if item.expects_call else "irrelevance")
    invalid = []
    for pair in pairs or []:
        try:
            invalid.append(hallucination_kind(pair, item.tools))
        except ValueError:  # a tool definition the library cannot read: the call cannot be valid
            invalid.append("bad_tool")
    return {"decision_ok": emitted == item.expects_call,
            "call_ok": result.ok if item.expects_call else None,
            "turn_ok": result.ok, "reason": result.reason, "invalid": invalid,
            "n_calls": len(pairs or [])}


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def aggregate(scored: Iterable[dict]) -> dict:
    """Metrics over scored records (the dicts `score` returns, possibly with more keys)."""
    rows = list(scored)
    call_rows = [r for r in rows if r.get("call_ok") is not None]
    text_rows = [r for r in rows if r.get("call_ok") is None]
    kinds = Counter(k for r in rows for k in r.get("invalid", []) if k)
    n_calls = sum(len(r.get("invalid", [])) for r in rows)
    n_invalid = sum(kinds.values())
    return {
        "n": len(rows),
        "n_call_turns": len(call_rows),
        "n_text_turns": len(text_rows),
        "decision_accuracy": _rate(sum(r["decision_ok"] for r in rows), len(rows)),
        "call_accuracy": _rate(sum(bool(r["call_ok"]) for r in call_rows), len(call_rows)),
        "turn_accuracy": _rate(sum(bool(r["turn_ok"]) for r in rows), len(rows)),
        "calls_on_text_turns": _rate(sum(not r["decision_ok"] for r in text_rows), len(text_rows)),
        "missed_call_turns": _rate(sum(not r["decision_ok"] for r in call_rows), len(call_rows)),
        "calls": n_calls,
        "invalid_calls": n_invalid,
        "invalid_call_rate": _rate(n_invalid, n_calls),
        "invalid_kinds": dict(sorted(kinds.items())),
        "failure_tags": dict(Counter(r["reason"].split(":", 1)[0] for r in rows if r.get("reason")).most_common()),
    }


# ------------------------------------------------------------------------------------------------ models
def load_for_eval(spec: str, dtype: str = "float32"):
    """`spec` is a model folder or ``default`` (the embedded SmolLM2-135M-Instruct)."""
    import torch

    from constrained_fc.model import load_model

    torch_dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    return load_model(None if spec in (None, "default", "embedded") else spec, dtype=torch_dtype)


def _trigger_id(tok, tools) -> int | None:
    from constrained_fc.runtime.plan import CallPlan

    try:
        return CallPlan(tok, tools, tool_choice="auto").trigger_id
    except ValueError:
        return None


def generate_plain(model, tok, messages, tools, max_new_tokens: int) -> tuple[str, list[int]]:
    """Greedy ``model.generate`` on the rendered prompt; the reply up to the end-of-turn token (special tokens
    kept, so ``[TOOL_CALLS]`` stays visible to `parse_lenient`) and its token ids."""
    import torch

    from constrained_fc.chat import encode_prompt

    ids = torch.tensor([encode_prompt(tok, messages, tools or None)], device=model.device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in new:
        new = new[:new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=False), new


def run_item(model, tok, item: EvalItem, modes=MODES, max_new_tokens: int = 128, reuse: bool = True) -> list[dict]:
    """Answer one item in each mode; one record (item, reply, calls, score, seconds) per mode."""
    from constrained_fc.runtime.decoding import generate
    from constrained_fc.errors import ConstrainedFCError

    records = []
    plain_ids = None
    for mode in modes:
        t0 = time.perf_counter()
        error = None
        reused = False
        if mode == "unconstrained":
            text, plain_ids = generate_plain(model, tok, item.messages, item.tools, max_new_tokens)
            calls = parse_lenient(text)
            finish = "stop" if len(plain_ids) < max_new_tokens else "length"
        else:
            trigger = _trigger_id(tok, item.tools)
            if reuse and plain_ids is not None and trigger is not None and trigger not in plain_ids:
                text, calls, finish, reused = records[0]["text"], None, records[0]["finish"], True
            else:
                try:
                    res = generate(model, tok, item.messages, item.tools, tool_choice="auto",
                                   max_new_tokens=max_new_tokens)
                    text, finish = res.text, res.finish_reason
                    calls = [(c.name, c.arguments) for c in res.tool_calls] or None
                except ConstrainedFCError as e:
                    text, calls, finish, error = "", None, "error", str(e)
        rec = {"set": item.set, "id": item.id, "objective": item.objective, "mode": mode,
               "expects_call": item.expects_call, "text": text, "finish": finish,
               "calls": [{"name": n, "arguments": a} for n, a in calls] if calls else None,
               "seconds": round(time.perf_counter() - t0, 2), "reused": reused}
        if error:
            rec["error"] = error
        rec.update(score(item, calls))
        records.append(rec)
    return records


def answer_nll(model, tok, prompt_messages, answer_ids: list[int]) -> float:
    """Mean per-token negative log-likelihood of `answer_ids` as the reply to `prompt_messages`."""
    import torch
    import torch.nn.functional as F

    from constrained_fc.chat import encode_prompt

    if not answer_ids:
        return 0.0
    prompt_ids = encode_prompt(tok, prompt_messages)
    ids = torch.tensor([prompt_ids + list(answer_ids)], device=model.device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    return float(F.cross_entropy(logits, torch.tensor(answer_ids, device=logits.device)).item())


def retention(model, tok, references: list[dict] | None, prompts=PLAIN_PROMPTS, max_new_tokens: int = 48) -> dict:
    """Plain-chat retention. Without `references`, this model's greedy answers become them (it is the base).
    Returns the references used, the mean NLL of the reference answers under this model, and the share of
    prompts where this model's greedy answer is exactly the reference (and the mean shared-prefix share)."""
    rows = []
    own: dict[str, tuple[str, list[int]]] = {}
    if references is None:
        references = []
        for p in prompts:
            msgs = [{"role": "user", "content": p}]
            text, ids = generate_plain(model, tok, msgs, None, max_new_tokens)
            own[p] = (text, ids)
            # The reference keeps the end-of-turn token when the answer ended, so stopping is scored too.
            full = ids + ([tok.eos_token_id] if len(ids) < max_new_tokens else [])
            references.append({"prompt": p, "answer": text, "answer_ids": full})
    for ref in references:
        msgs = [{"role": "user", "content": ref["prompt"]}]
        text, ids = own.get(ref["prompt"]) or generate_plain(model, tok, msgs, None, max_new_tokens)
        ref_ids = [t for t in ref["answer_ids"] if t != tok.eos_token_id]
        shared = next((i for i, (a, b) in enumerate(zip(ids, ref_ids)) if a != b), min(len(ids), len(ref_ids)))
        rows.append({"prompt": ref["prompt"], "answer": text, "same": ids == ref_ids,
                     "shared_prefix": shared / max(len(ref_ids), 1),
                     "ref_nll": answer_nll(model, tok, msgs, ref["answer_ids"])})
    n = len(rows)
    return {"n": n, "reference_nll": round(sum(r["ref_nll"] for r in rows) / n, 4) if n else None,
            "exact_agreement": round(sum(r["same"] for r in rows) / n, 4) if n else None,
            "prefix_agreement": round(sum(r["shared_prefix"] for r in rows) / n, 4) if n else None,
            "answers": rows, "references": references}


# ----------------------------------------------------------------------------------------------- running
@dataclass
class EvalSettings:
    eval_file: str | None = None
    bfcl: tuple = ("simple", "multiple")
    limit: int | None = 20
    modes: tuple = MODES
    max_new_tokens: int = 128
    retention_prompts: int = 80
    retention_tokens: int = 48
    sealtools_unseen: bool = False
    reference_model: str | None = None  # whose greedy answers are the retention references (default: the first)
    reuse: bool = True
    dtype: str = "float32"
    bfcl_data: str | None = None
    seed: int = 0


def build_items(settings: EvalSettings) -> dict[str, list[EvalItem]]:
    sets: dict[str, list[EvalItem]] = {}
    if settings.eval_file:
        sets["heldout"] = heldout_items(settings.eval_file, settings.limit, settings.seed)
    for cat in settings.bfcl:
        sets[f"bfcl_{cat}"] = bfcl_items(cat, settings.limit, settings.bfcl_data)
    if settings.sealtools_unseen:
        sets["sealtools_unseen"] = sealtools_unseen_items(settings.limit, settings.bfcl_data)
    return sets


def retention_prompts(settings: "EvalSettings") -> list[str]:
    """The first turns of the MT-Bench questions (never trained on), the first `retention_prompts` of them."""
    from .sources import mt_bench_prompts

    return mt_bench_prompts(settings.bfcl_data)[:settings.retention_prompts]


def evaluate_model(spec: str, sets: dict[str, list[EvalItem]], settings: EvalSettings,
                   references: list[dict] | None = None, label: str | None = None, progress=True,
                   partial: Path | None = None) -> dict:
    """Run every item of `sets` in every mode, plus retention. Returns the model's result (metrics per set and
    mode, retention, per-item records). With `partial`, each item's records are appended to that JSONL file as
    they finish, and items already there (same model label, set and id) are not run again: a long evaluation
    that was stopped continues where it was."""
    t0 = time.time()
    model, tok = load_for_eval(spec, settings.dtype)
    records: list[dict] = []
    finished: dict[tuple, list[dict]] = {}
    if partial is not None and partial.is_file():
        for line in partial.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("model") == (label or spec):
                finished.setdefault((r["set"], r["id"]), []).append(r)
    total = sum(len(v) for v in sets.values())
    done = 0
    for name, items in sets.items():
        for item in items:
            if (name, item.id) in finished:
                records += [{k: v for k, v in r.items() if k != "model"} for r in finished[(name, item.id)]]
                done += 1
                continue
            recs = run_item(model, tok, item, settings.modes, settings.max_new_tokens, settings.reuse)
            records += recs
            if partial is not None:
                with open(partial, "a", encoding="utf-8") as f:
                    for r in recs:
                        f.write(json.dumps({"model": label or spec, **r}, ensure_ascii=False) + "\n")
            done += 1
            if progress:
                marks = " ".join(f"{r['mode'][:5]}:{'ok' if r['turn_ok'] else 'x'}" for r in recs)
                print(f"  [{label or spec}] {done}/{total} {name} {item.id}: {marks} "
                      f"({sum(r['seconds'] for r in recs):.1f}s)", file=sys.stderr, flush=True)
    metrics = {name: {mode: aggregate(r for r in records if r["set"] == name and r["mode"] == mode)
                      for mode in settings.modes} for name in sets}
    for name in sets:
        for mode in settings.modes:
            metrics[name][mode]["reused"] = sum(r["reused"] for r in records
                                                if r["set"] == name and r["mode"] == mode)
    ret = None
    if settings.retention_prompts:
        ret = retention(model, tok, references, retention_prompts(settings), settings.retention_tokens)
    return {"label": label or spec, "model": spec, "metrics": metrics, "retention": ret,
            "seconds": round(time.time() - t0, 1), "records": records}


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _invalid(m: dict) -> str:
    if not m["calls"]:
        return "– (0 calls)"
    return f"{m['invalid_call_rate']:.2f} ({m['invalid_calls']}/{m['calls']})"


def markdown(results: dict) -> str:
    """`results.md`: one table per model, or a before -> after table when there are two models."""
    models = results["models"]
    lines = [RESULTS_TITLE, ""]
    s = results["settings"]
    limit = f"the first {s['limit']} items per set" if s['limit'] else "every item of each set"
    lines.append(f"Settings: {limit}, max_new_tokens {s['max_new_tokens']}, "
                 f"dtype {s['dtype']}, greedy decoding; constrained = `generate(..., tool_choice=\"auto\")`, "
                 "unconstrained = `model.generate` + `parse_lenient`. Scored with `constrained_fc.eval.checker`.")
    reused = [(m["label"], sum(per.get("constrained", {}).get("reused", 0) for per in m["metrics"].values()),
               sum(per.get("constrained", {}).get("n", 0) for per in m["metrics"].values()))
              for m in models if not m.get("reference_only")]
    if any(r for _, r, _ in reused):
        lines.append("Constrained replies identical to the unconstrained one because the model never emitted the "
                     "trigger token (reused, not decoded twice): "
                     + ", ".join(f"`{label}` {r}/{n}" for label, r, n in reused) + ".")
    lines.append("")
    scored = [m for m in models if not m.get("reference_only")]
    pair = len(scored) >= 2
    before, after = (scored[0], scored[-1]) if pair else (None, scored[-1])
    if pair:
        lines.append(f"Before: `{before['label']}` → after: `{after['label']}`")
        lines.append("")
        lines.append("| set | mode | n (call/text turns) | decision accuracy | call accuracy | invalid-call rate | "
                     "turn accuracy |")
        lines.append("|---|---|---|---|---|---|---|")
    else:
        lines.append(f"Model: `{after['label']}`")
        lines.append("")
        lines.append("| set | mode | n (call/text turns) | decision accuracy | call accuracy | invalid-call rate | "
                     "turn accuracy |")
        lines.append("|---|---|---|---|---|---|---|")
    for name, per_mode in after["metrics"].items():
        for mode, m in per_mode.items():
            n = f"{m['n']} ({m['n_call_turns']}/{m['n_text_turns']})"
            if pair and name in before["metrics"] and mode in before["metrics"][name]:
                b = before["metrics"][name][mode]
                cells = [f"{_fmt(b[k])} → {_fmt(m[k])}" for k in ("decision_accuracy", "call_accuracy")]
                cells.append(f"{_invalid(b)} → {_invalid(m)}")
                cells.append(f"{_fmt(b['turn_accuracy'])} → {_fmt(m['turn_accuracy'])}")
            else:
                cells = [_fmt(m["decision_accuracy"]), _fmt(m["call_accuracy"]), _invalid(m),
                         _fmt(m["turn_accuracy"])]
            lines.append(f"| {SET_TITLES.get(name, name)} | {mode} | {n} | " + " | ".join(cells) + " |")
    rets = [(m["label"], m["retention"]) for m in models if m.get("retention")]
    if rets:
        lines += ["", "## Retention on tool-free chat prompts", "",
                  f"Reference answers: `{s.get('reference_model') or models[0]['label']}`'s greedy answers to "
                  f"{rets[0][1]['n']} MT-Bench first turns (up to {s['retention_tokens']} tokens).", "",
                  "| model | mean NLL of reference answers | exact agreement | shared-prefix agreement |",
                  "|---|---|---|---|"]
        base_nll = rets[0][1]["reference_nll"]
        for label, r in rets:
            rise = (f" ({100 * (r['reference_nll'] / base_nll - 1):+.1f}%)"
                    if base_nll and r is not rets[0][1] else "")
            lines.append(f"| `{label}` | {_fmt(r['reference_nll'], 3)}{rise} | {_fmt(r['exact_agreement'])} | "
                         f"{_fmt(r['prefix_agreement'])} |")
    lines.append("")
    return "\n".join(lines)


def run(model_specs: list[str], settings: EvalSettings, out: str | Path, labels: list[str] | None = None,
        baseline: str | Path | None = None) -> dict:
    """Evaluate one or two models (the first is "before"), or one model against a `baseline` results.json;
    write ``results.json``, ``results.md`` and ``records.jsonl`` under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets = build_items(settings)
    models: list[dict] = []
    references = None
    if baseline:
        base = json.loads(Path(baseline).read_text(encoding="utf-8"))
        prior = base["models"][0] if len(base["models"]) == 1 else base["models"][-1]
        models.append({k: v for k, v in prior.items() if k != "records"})
        if prior.get("retention"):
            references = prior["retention"]["references"]
    if references is None and settings.reference_model and settings.retention_prompts:
        ref_model, ref_tok = load_for_eval(settings.reference_model, settings.dtype)
        ref_ret = retention(ref_model, ref_tok, None, retention_prompts(settings), settings.retention_tokens)
        references = ref_ret["references"]
        # The reference model's own NLL of its answers is the baseline the retention bar's "rise" is taken from.
        models.append({"label": settings.reference_model, "model": settings.reference_model, "metrics": {},
                       "retention": {k: v for k, v in ref_ret.items() if k != "references"},
                       "reference_only": True})
        del ref_model
    labels = list(labels or [])
    all_records = []
    for i, spec in enumerate(model_specs):
        label = labels[i] if i < len(labels) else spec
        result = evaluate_model(spec, sets, settings, references, label, partial=out / "records.partial.jsonl")
        if references is None and result["retention"]:
            references = result["retention"]["references"]
        all_records += [{"model": label, **r} for r in result.pop("records")]
        models.append(result)
    results = {"settings": asdict(settings), "sets": {k: len(v) for k, v in sets.items()}, "models": models}
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
    with open(out / "records.jsonl", "w", encoding="utf-8") as f:
        for r in all_records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return results


__all__ = ["EvalItem", "EvalSettings", "to_ground_truth", "category_for", "heldout_items", "bfcl_items", "score",
           "aggregate", "run_item", "retention", "evaluate_model", "markdown", "run", "PLAIN_PROMPTS"]
