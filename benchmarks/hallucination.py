"""Hallucinated tool calls on BFCL v3: unconstrained generation against constrained_fc (auto / required).

Categories simple / multiple / parallel / parallel_multiple / irrelevance, for the embedded
SmolLM2-135M-Instruct or any local model directory (a fine-tuned merge included).

Three modes, all greedy on the very same prompt (`render_prompt(tokenizer, messages, tools)`, which is also
what `constrained_fc.generate` renders) and the same `--max-new-tokens`, stopping at end-of-sequence:

* `unconstrained`: plain `model.generate(do_sample=False)`; the decoded text is read with `parse_lenient`,
  as a user would read it. No processor of the model's own generation config (a repetition penalty, say)
  is allowed in, since the constrained decoder applies none either.
* `auto`: `constrained_fc.generate(..., tool_choice="auto")`: free text until the model writes the call
  trigger, then every token under the grammar.
* `required`: `constrained_fc.generate(..., tool_choice="required")`: the trigger is forced, so every case
  gets a grammar-constrained call list.

A call is hallucinated when it names a function that is not in the case's list (`unknown_function`) or its
arguments fail that function's schema (`schema_violation`), both by `checker.hallucination_kind`. The
reduction ratio per category is unconstrained hallucinated calls / constrained hallucinated calls; a zero
denominator gives "inf" (∞, every hallucination removed) when the numerator is positive and null ("–",
nothing to reduce) when both are zero.

    python benchmarks/hallucination.py [--model DIR] [--limit N] [--categories ...] [--modes ...]
        [--max-new-tokens 128] [--threads N] [--out results/hallucination] [--data ../shared/data]

The default `--limit` (first 12 cases per category) keeps a full run (5 categories x 3 modes) inside 20
minutes on 2 CPU cores with the embedded model; `--limit 0` runs every case. On a machine shared with other
jobs, `--threads 1` avoids oversubscribing the cores (two torch threads per process can then run several
times slower). Besides results.json / results.md / hallucination.png, cases.jsonl keeps every per-case record
(calls, AST verdict, first characters of the generated text).
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from common import add_model_flag, md_table, model_label, parser, write_results

import torch
from tqdm import tqdm

from constrained_fc.chat import render_prompt
from constrained_fc.compiler.formats import FORMATS
from constrained_fc.eval.checker import check_calls, hallucination_kind, parse_lenient
from constrained_fc.eval.data import BFCL_CATEGORIES, load_bfcl
from constrained_fc.runtime.decoding import generate

MODES = ("unconstrained", "auto", "required")
CONSTRAINED_MODES = ("required", "auto")
# Measured with the embedded model (--limit 5, one torch thread, on a 2-core machine busy with other jobs):
# per case 8.1 s wall / 5.4 CPU-s for `unconstrained`, 8.1 / 5.5 for `auto` (both mostly run to the 128-token
# limit: the model writes Python instead of calls) and 2.4 / 1.7 for `required`, so 18.5 s wall for the three
# modes. 5 categories x 12 cases is then about 18.5 minutes even at that busy-machine rate (about 12.5 minutes
# by CPU time); `--limit 0` runs everything (1,240 cases, hours on a CPU).
DEFAULT_LIMIT = 12
DEFAULT_MAX_NEW_TOKENS = 128
TEXT_KEEP = 600  # characters of generated text kept per case in cases.jsonl

# Signs that a model meant to write a call, in any format parse_lenient knows.
_ATTEMPT_RE = re.compile(r"\[TOOL_CALLS\]|<tool_call>|<function=|\{\s*\\?[\"']name\\?[\"']\s*:")
_TRIGGERS = tuple(f.trigger for f in FORMATS.values() if f.trigger)  # the registered formats

ROW_COLUMNS = ["category", "mode", "n", "called", "calls", "parse_failures", "unknown_function",
               "schema_violations", "hallucinated_calls", "ast_accuracy", "finish_tool_calls", "mean_new_tokens",
               "wall_s", "s_per_case", "cpu_s_per_case", "errors"]
COLUMN_HELP = {
    "n": "cases run",
    "called": "cases with at least one parsed call",
    "calls": "parsed calls in all",
    "parse_failures": "cases where the model attempted a call (unconstrained: wrote `[TOOL_CALLS]`, `<tool_call>`, "
                      "`<function=`, `{\"name\":` or `known_tool(`; constrained: started the call list) but no call "
                      "could be parsed; for constrained modes these are call lists cut by the token limit",
    "unknown_function": "calls naming a function that is not in the case's function list",
    "schema_violations": "calls to a listed function whose arguments fail its JSON Schema or add an undeclared "
                         "parameter (`hallucination_kind`)",
    "hallucinated_calls": "unknown_function + schema_violations",
    "ast_accuracy": "fraction of cases passing BFCL's AST check (`check_calls`); for irrelevance, the fraction "
                    "with no call (irrelevance accuracy)",
    "finish_tool_calls": "cases whose finish reason is `tool_calls` (unconstrained: stopped at end-of-sequence "
                         "with at least one parsed call)",
    "mean_new_tokens": "mean new tokens per case (forced tokens included, end-of-sequence excluded)",
    "wall_s": "total wall-clock seconds for the row's cases (prompt, generation and parsing)",
    "s_per_case": "wall_s / n",
    "cpu_s_per_case": "process CPU seconds per case, all threads together (a steadier cost measure than wall time "
                      "on a shared machine)",
    "errors": "cases where generation raised (counted as failing the AST check)",
}


# ----------------------------------------------------------------------------------------------------------
# Running one case

def eos_ids(tokenizer) -> list[int]:
    """The end-of-sequence ids the constrained decoder stops at (`CallPlan.eos_ids`); the baseline uses them too."""
    eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


def attempted_call(text: str, tool_names) -> bool:
    """Did the model try to write a call: a call marker, a `{"name":` object, or `known_tool(` (a Python
    definition `def known_tool(` is not a call)?"""
    if _ATTEMPT_RE.search(text):
        return True
    return any(re.search(r"(?<![\w.])(?<!def )" + re.escape(n) + r"\s*\(", text) for n in tool_names if n)


def greedy_kwargs(tokenizer, model, max_new_tokens: int) -> dict:
    """Plain greedy decoding with nothing from the model's generation config that changes logits."""
    eos = eos_ids(tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = model.generation_config.pad_token_id
    if pad is None:
        pad = eos[0]
    return {"max_new_tokens": max_new_tokens, "min_new_tokens": None, "min_length": 0, "do_sample": False,
            "num_beams": 1, "temperature": None, "top_p": None, "top_k": None, "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
            "begin_suppress_tokens": None, "sequence_bias": None, "forced_bos_token_id": None,
            "forced_eos_token_id": None, "eos_token_id": eos, "pad_token_id": pad}


def run_unconstrained(model, tokenizer, case, max_new_tokens: int) -> dict:
    prompt = render_prompt(tokenizer, case.messages, case.functions)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids),
                             **greedy_kwargs(tokenizer, model, max_new_tokens))
    new = out[0, ids.shape[1]:].tolist()
    stops = set(eos_ids(tokenizer))
    cut = next((i for i, t in enumerate(new) if t in stops), None)
    stopped = cut is not None
    new = new[:cut] if stopped else new
    # Special tokens stay: `[TOOL_CALLS]` is one, and a user reading the raw reply would see it.
    text = tokenizer.decode(new, skip_special_tokens=False)
    calls = parse_lenient(text) or []
    names = [f.get("name") for f in case.functions if isinstance(f, dict)]
    finish = "length" if not stopped else ("tool_calls" if calls else "stop")
    return {"calls": [(n, a) for n, a in calls], "text": text, "finish_reason": finish, "new_tokens": len(new),
            "prompt_tokens": ids.shape[1], "parse_failure": bool(attempted_call(text, names) and not calls)}


def run_constrained(model, tokenizer, case, mode: str, max_new_tokens: int) -> dict:
    res = generate(model, tokenizer, case.messages, case.functions, tool_choice=mode,
                   max_new_tokens=max_new_tokens, do_sample=False)
    calls = [(c.name, c.arguments) for c in res.tool_calls]
    started = any(t in res.text for t in _TRIGGERS)
    return {"calls": calls, "text": res.text, "finish_reason": res.finish_reason,
            "new_tokens": res.stats.tokens_generated, "prompt_tokens": res.stats.prompt_tokens,
            "parse_failure": bool(started and not calls)}


def score_case(model, tokenizer, case, mode: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:
    """One case in one mode -> a per-case record (JSON-ready)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    t0, c0 = time.perf_counter(), time.process_time()
    error = None
    try:
        if mode == "unconstrained":
            out = run_unconstrained(model, tokenizer, case, max_new_tokens)
        else:
            out = run_constrained(model, tokenizer, case, mode, max_new_tokens)
    except Exception as e:  # one bad case must not take down the run; it is counted in `errors`
        error = f"{type(e).__name__}: {e}"
        out = {"calls": [], "text": "", "finish_reason": "error", "new_tokens": 0, "prompt_tokens": 0,
               "parse_failure": False}
    kinds = []
    for call in out["calls"]:
        try:
            kinds.append(hallucination_kind(call, case.functions))
        except Exception as e:  # a tool definition the normaliser rejects
            kinds.append(None)
            error = error or f"{type(e).__name__}: {e}"
    if error is None:
        check = check_calls(out["calls"] or None, case.functions, case.ground_truth, case.category)
        ast_ok, reason = check.ok, check.reason
    else:
        ast_ok, reason = False, "error"
    return {
        "id": case.id, "category": case.category, "mode": mode,
        "calls": [{"name": n, "arguments": a} for n, a in out["calls"]],
        "n_calls": len(out["calls"]),
        "parse_failure": out["parse_failure"],
        "unknown_function": kinds.count("unknown_function"),
        "schema_violations": kinds.count("schema_violation"),
        "ast_ok": bool(ast_ok), "ast_reason": reason,
        "finish_reason": out["finish_reason"],
        "new_tokens": int(out["new_tokens"]), "prompt_tokens": int(out["prompt_tokens"]),
        "wall_s": round(time.perf_counter() - t0, 4),
        "cpu_s": round(time.process_time() - c0, 4),
        "error": error,
        "text": out["text"][:TEXT_KEEP],
    }


def score(model, tokenizer, cases, modes=MODES, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
          progress: bool = True) -> list[dict]:
    """Every case in every mode (modes interleaved per case, so machine load hits them alike)."""
    records = []
    bar = tqdm(cases, desc="hallucination", unit="case", disable=not progress)
    for case in bar:
        bar.set_postfix_str(case.category)
        for mode in modes:
            records.append(score_case(model, tokenizer, case, mode, max_new_tokens))
    return records


# ----------------------------------------------------------------------------------------------------------
# Aggregation

def _order(values, preferred):
    known = [v for v in preferred if v in values]
    return known + sorted(v for v in values if v not in preferred)


def aggregate(records: list[dict]) -> list[dict]:
    """Per-case records -> one row per (category, mode), categories and modes in their canonical order."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["category"], r["mode"]), []).append(r)
    cats = _order({c for c, _ in groups}, BFCL_CATEGORIES)
    modes = _order({m for _, m in groups}, MODES)
    rows = []
    for cat in cats:
        for mode in modes:
            rs = groups.get((cat, mode))
            if not rs:
                continue
            n = len(rs)
            unknown = sum(r["unknown_function"] for r in rs)
            schema = sum(r["schema_violations"] for r in rs)
            wall = sum(r["wall_s"] for r in rs)
            cpu = sum(r.get("cpu_s", 0.0) for r in rs)
            rows.append({
                "category": cat, "mode": mode, "n": n,
                "called": sum(r["n_calls"] > 0 for r in rs),
                "calls": sum(r["n_calls"] for r in rs),
                "parse_failures": sum(bool(r["parse_failure"]) for r in rs),
                "unknown_function": unknown,
                "schema_violations": schema,
                "hallucinated_calls": unknown + schema,
                "ast_accuracy": sum(bool(r["ast_ok"]) for r in rs) / n,
                "finish_tool_calls": sum(r["finish_reason"] == "tool_calls" for r in rs),
                "mean_new_tokens": sum(r["new_tokens"] for r in rs) / n,
                "wall_s": round(wall, 2),
                "s_per_case": round(wall / n, 3),
                "cpu_s_per_case": round(cpu / n, 3),
                "errors": sum(r.get("error") is not None for r in rs),
            })
    return rows


def reduction_ratio(unconstrained: int, constrained: int) -> float | str | None:
    """unconstrained / constrained hallucinated calls; "inf" when only the denominator is 0, None for 0/0."""
    if constrained:
        return unconstrained / constrained
    return "inf" if unconstrained else None


def format_ratio(ratio, unconstrained: int, constrained: int) -> str:
    if ratio is None:
        return f"– ({unconstrained} → {constrained})"
    if ratio == "inf":
        return f"∞ ({unconstrained} → {constrained})"
    return f"{ratio:.3g}× ({unconstrained} → {constrained})"


def reductions(rows: list[dict]) -> list[dict]:
    """Per category and overall: hallucinated calls per mode and the reduction ratio of each constrained mode.
    Empty when there is no unconstrained row or no constrained one."""
    by = {(r["category"], r["mode"]): r for r in rows}
    modes = {r["mode"] for r in rows}
    constrained = [m for m in CONSTRAINED_MODES if m in modes]
    if "unconstrained" not in modes or not constrained:
        return []
    cats = _order({r["category"] for r in rows}, BFCL_CATEGORIES)
    out = []
    totals = {m: 0 for m in ("unconstrained", *constrained)}
    for cat in cats:
        if (cat, "unconstrained") not in by or any((cat, m) not in by for m in constrained):
            continue
        entry = {"category": cat}
        for m in ("unconstrained", *constrained):
            entry[m] = by[(cat, m)]["hallucinated_calls"]
            totals[m] += entry[m]
        out.append(entry)
    if not out:
        return []
    out.append({"category": "overall", **totals})
    for entry in out:
        for m in constrained:
            ratio = reduction_ratio(entry["unconstrained"], entry[m])
            entry[f"reduction_{m}"] = ratio
            entry[f"reduction_{m}_text"] = format_ratio(ratio, entry["unconstrained"], entry[m])
    return out


# ----------------------------------------------------------------------------------------------------------
# Output

def markdown(rows: list[dict], reds: list[dict], settings: dict) -> str:
    lines = [f"# Hallucinated tool calls: unconstrained vs constrained ({settings['model']})", "",
             f"BFCL v3, first {settings['limit'] or 'all'} cases per category, greedy, "
             f"max_new_tokens={settings['max_new_tokens']}, same prompt in every mode.", "",
             md_table(rows, ROW_COLUMNS), ""]
    if reds:
        cons = [m for m in CONSTRAINED_MODES if f"reduction_{m}" in reds[0]]
        lines += ["## Hallucination reduction (unconstrained hallucinated calls / constrained)", "",
                  md_table(reds, ["category", "unconstrained", *cons, *[f"reduction_{m}_text" for m in cons]],
                           ["category", "unconstrained", *cons, *[f"reduction ({m})" for m in cons]]), "",
                  "∞ (N → 0): the constrained mode removed every one of N hallucinated calls; "
                  "– (0 → 0): neither mode hallucinated, so there is nothing to reduce (null in results.json).",
                  ""]
    lines += ["## Columns", ""]
    lines += [f"- `{c}`: {COLUMN_HELP[c]}" for c in ROW_COLUMNS if c in COLUMN_HELP]
    lines += ["- modes: `unconstrained` = plain `model.generate` greedy, read with `parse_lenient`; "
              "`auto` / `required` = `constrained_fc.generate` with that `tool_choice`."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cats = _order({r["category"] for r in rows}, BFCL_CATEGORIES)
    modes = _order({r["mode"] for r in rows}, MODES)
    by = {(r["category"], r["mode"]): r for r in rows}
    width = 0.8 / max(len(modes), 1)
    colors = {"unconstrained": "tab:red", "auto": "tab:blue", "required": "tab:green"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    top = 0
    for i, mode in enumerate(modes):
        xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(cats))]
        unknown = [by.get((c, mode), {}).get("unknown_function", 0) for c in cats]
        schema = [by.get((c, mode), {}).get("schema_violations", 0) for c in cats]
        color = colors.get(mode)
        ax1.bar(xs, unknown, width, color=color, label=f"{mode}: unknown function")
        ax1.bar(xs, schema, width, bottom=unknown, color=color, alpha=0.45, hatch="//",
                label=f"{mode}: schema violation")
        for x, u, v in zip(xs, unknown, schema):  # the count on top, so a 0 is visible as a 0
            ax1.annotate(str(u + v), (x, u + v), ha="center", va="bottom", fontsize=7)
            top = max(top, u + v)
        acc = [by.get((c, mode), {}).get("ast_accuracy", 0.0) for c in cats]
        ax2.bar(xs, acc, width, color=color, label=mode)
        for x, a in zip(xs, acc):
            ax2.annotate(f"{a:.2f}", (x, a), ha="center", va="bottom", fontsize=6)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(cats)), cats, rotation=15)
    ax1.set_ylim(0, max(1, top) * 1.2)
    ax1.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax1.set_ylabel("hallucinated calls")
    ax1.set_title("Hallucinated calls (unknown function + schema violation)")
    ax1.legend(fontsize=7)
    ax2.set_ylim(0, 1.1)
    ax2.set_ylabel("AST accuracy (irrelevance: no call)")
    ax2.set_title("BFCL AST accuracy")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out, records: list[dict], settings: dict) -> tuple[Path, list[dict], list[dict]]:
    """Aggregate, then write results.json, results.md, hallucination.png and cases.jsonl under `out`."""
    rows = aggregate(records)
    reds = reductions(rows)
    path = write_results(out, rows, markdown(rows, reds, settings), {"reduction": reds, "settings": settings})
    plot(rows, path / "hallucination.png")
    with (path / "cases.jsonl").open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    return path, rows, reds


def load_cases(categories, limit: int | None, data=None) -> list:
    cases = []
    for cat in categories:
        cases += load_bfcl(cat, data_dir=data, limit=limit)
    return cases


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0], "hallucination")
    ap.set_defaults(limit=DEFAULT_LIMIT)
    for action in ap._actions:
        if action.dest == "limit":
            action.help = f"first N cases per category (default {DEFAULT_LIMIT}; 0 = all)"
    add_model_flag(ap)
    ap.add_argument("--categories", nargs="+", default=list(BFCL_CATEGORIES), choices=BFCL_CATEGORIES)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    limit = args.limit if args.limit and args.limit > 0 else None
    categories = list(dict.fromkeys(args.categories))
    modes = list(dict.fromkeys(args.modes))

    from constrained_fc.model import load_model
    cases = load_cases(categories, limit, args.data)
    model, tokenizer = load_model(args.model)
    settings = {"model": model_label(args.model), "limit": limit,
                "categories": categories, "modes": modes, "max_new_tokens": args.max_new_tokens,
                "n_cases": len(cases), "torch_threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    records = score(model, tokenizer, cases, modes, args.max_new_tokens)
    settings["total_wall_s"] = round(time.perf_counter() - t0, 1)
    out, rows, reds = write_outputs(args.out, records, settings)

    print(md_table(rows, ["category", "mode", "n", "called", "parse_failures", "unknown_function",
                          "schema_violations", "ast_accuracy", "finish_tool_calls", "mean_new_tokens", "s_per_case"]))
    for r in reds:
        print(f"{r['category']:18} " + "  ".join(f"{m}: {r[f'reduction_{m}_text']}" for m in CONSTRAINED_MODES
                                                   if f"reduction_{m}_text" in r))
    print(f"{len(cases)} cases x {len(modes)} modes in {settings['total_wall_s']} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
