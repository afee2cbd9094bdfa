"""End-to-end tool-call speed on BFCL simple and multiple, plus the mask cost per token, in one run.

Same model (by default the shipped fine-tune, `--model` for another), same prompt ids, greedy, for every
engine. `--mode auto` (the default) is how the product runs: the prompt is the rendered conversation
`render_prompt(tok, case.messages, case.functions)` and the model decides when to write `[TOOL_CALLS]`; our
engines and xgrammar's triggered tags wait for the trigger, and the engines that cannot (outlines, xgrammar's
JSON schema) get the prompt followed by `[TOOL_CALLS]`, one token less to write. `--mode required` gives every
engine the prompt plus `[TOOL_CALLS]`, so all of them only write the call body (for models that do not call by
themselves, e.g. `--model base`). Engines:

    unconstrained (to EOS)              plain model.generate until end-of-sequence or --max-new-tokens
    unconstrained (stop at call end)    the same, stopped as soon as the output holds a complete call list (a
                                        JSON list after the trigger, when there is one)
    ToolCallLogitsProcessor             our processor inside model.generate
    constrained_fc.generate (ff)        our loop, forced tokens fed in one forward pass (fast-forward)
    constrained_fc.generate (no ff)     our loop, one forward pass per token
    outlines JsonSchema (outlines_core) outlines 1.x logits processor from a JSON schema of the call list
    outlines CFG (llguidance)           outlines 1.x logits processor from our Lark grammar (`body_lark`)
    xgrammar JSON schema                xgrammar.contrib.hf.LogitsProcessor on the same JSON schema
    xgrammar triggered tags             xgrammar's structural tag: free text until `[TOOL_CALLS]`, then the same
                                        JSON schema (`triggered_tags`, the peer closest to our `auto`)

Wall time is one `generate` call (prompt prefill included); building the grammar / processor for a call is
timed apart (`setup_ms`), and one-off backend construction (vocabulary conversion) apart again (`backend_ms`).
One untimed warm-up call per engine. `ratio_to_unconstrained` = median wall of "unconstrained (stop at call
end)" / median wall of the engine over the same cases (`ratio_vs_to_eos`: against "to EOS").

    python benchmarks/speed.py [--mode auto|required] [--limit N] [--categories simple multiple]
                               [--max-new-tokens 128] [--out results/speed] [--skip-peers] [--model DIR]
"""
from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

from common import add_model_flag, md_table, parser, write_results

import torch
from tqdm import tqdm
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

import compile_speed
from constrained_fc.compiler.call_scanner import closing_bracket
from constrained_fc.chat import TOOL_CALLS, render_prompt
from constrained_fc.errors import GrammarMismatchError
from constrained_fc.runtime.logits_processor import ToolCallLogitsProcessor
from constrained_fc.compiler.options import Options
from constrained_fc.runtime.plan import CallPlan
from constrained_fc.compiler.tool_grammar import compile_tools
from constrained_fc.compiler.tools import normalize_tools

DEFAULT_LIMIT = 50  # per category: about 20 min on 2 quiet CPU cores (9 engines, ~1.2 s a call)
DEFAULT_MAX_MINUTES = 40.0  # no new case is started after this
TARGET_SPEEDUP = 1.5  # fast-forward vs "unconstrained (stop at call end)"
MASK_SHARE_TARGET_PCT = 1.0

TO_EOS = "unconstrained (to EOS)"
STOP_AT_END = "unconstrained (stop at call end)"
LOGITS_PROCESSOR = "ToolCallLogitsProcessor"
FAST_FORWARD = "constrained_fc.generate (fast-forward)"
NO_FAST_FORWARD = "constrained_fc.generate (no fast-forward)"
OUTLINES_JSON = "outlines JsonSchema (outlines_core)"
OUTLINES_CFG = "outlines CFG (llguidance)"
XGRAMMAR = "xgrammar JSON schema"
XGRAMMAR_TAGS = "xgrammar triggered tags"

OURS = (LOGITS_PROCESSOR, FAST_FORWARD, NO_FAST_FORWARD)
PEERS = (OUTLINES_JSON, OUTLINES_CFG, XGRAMMAR, XGRAMMAR_TAGS)
WAITS_FOR_TRIGGER = (TO_EOS, STOP_AT_END) + OURS + (XGRAMMAR_TAGS,)  # in auto mode: prompt alone
ENGINES = (TO_EOS, STOP_AT_END) + OURS + PEERS


# -- the stricter baseline: stop once a complete JSON list has been written ------------------------------------
def call_list_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the first top-level `[...]` in `text` that `json.loads` accepts, else None. A balanced
    list that does not load is skipped as a whole (a list nested inside it is not top-level)."""
    i = 0
    while True:
        start = text.find("[", i)
        if start < 0:
            return None
        end = closing_bracket(text, start)
        if end is None:
            return None  # still open: not complete yet
        end += 1
        try:
            json.loads(text[start:end])
            return start, end
        except ValueError:
            i = end


def call_text(text: str) -> str:
    """Where a call list is looked for: after the last trigger when the text has one, else all of it."""
    i = text.rfind(TOOL_CALLS)
    return text[i + len(TOOL_CALLS):] if i >= 0 else text


class CallListStop(StoppingCriteria):
    """Stops a row as soon as its generated text (after `prompt_length` ids) contains a complete call list: a
    JSON list, after the trigger when the text has one."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        done = []
        for row in input_ids:
            text = self.tokenizer.decode(row[self.prompt_length:].tolist(), skip_special_tokens=False)
            done.append(call_list_span(call_text(text)) is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


# -- ratios -----------------------------------------------------------------------------------------------------
def speed_ratio(baseline: dict[str, float], engine: dict[str, float]) -> float | None:
    """median(baseline wall) / median(engine wall) over the cases both have (keys: case ids). > 1: the engine
    is faster. None when they share no case."""
    common = [k for k in engine if k in baseline and engine[k] is not None and baseline[k] is not None]
    if not common:
        return None
    mine = statistics.median(engine[k] for k in common)
    if mine <= 0:
        return None
    return statistics.median(baseline[k] for k in common) / mine


# -- forward-pass meter -----------------------------------------------------------------------------------------
class ForwardMeter:
    """Counts and times every forward call of `model` (hooks on the top module), whoever makes it."""

    def __init__(self, model):
        self.calls: list[tuple[int, float]] = []  # (input length, seconds)
        self._t0 = 0.0
        self._n = 0
        self._hooks = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                       model.register_forward_hook(self._post, with_kwargs=True)]

    def _pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        self._n = int(ids.shape[-1]) if isinstance(ids, torch.Tensor) else 0
        self._t0 = time.perf_counter()

    def _post(self, module, args, kwargs, output):
        self.calls.append((self._n, time.perf_counter() - self._t0))

    def reset(self) -> None:
        self.calls = []

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


# -- engines ----------------------------------------------------------------------------------------------------
def body_schema(tools) -> dict:
    """JSON schema of the call list after the trigger: an array of per-tool {"name": const, "arguments": ...}."""
    variants = []
    for t in normalize_tools(tools):
        variants.append({"type": "object",
                         "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                         "required": ["name", "arguments"], "additionalProperties": False})
    items = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {"type": "array", "items": items, "minItems": 1}


@dataclass
class Prepared:
    processor: Any = None
    plan: Any = None


class Bench:
    """Model, tokenizer and the peers' one-off backends; `setup` / `run` per engine and case."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 128, mode: str = "auto"):
        self.model, self.tok = model, tokenizer
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.trigger_ids = tokenizer.encode(TOOL_CALLS, add_special_tokens=False)
        self.meter = ForwardMeter(model)
        self.backend_ms: dict[str, float] = {}
        self._backends: dict[str, Any] = {}
        self._prompts: dict[str, list[int]] = {}
        self._score_grammars: dict[str, tuple] = {}
        eos = tokenizer.eos_token_id
        self.stop_ids = {eos, tokenizer.pad_token_id} - {None}

    def close(self) -> None:
        self.meter.close()

    def prompt_ids(self, case) -> list[int]:
        if case.id not in self._prompts:
            text = render_prompt(self.tok, case.messages, case.functions)
            self._prompts[case.id] = self.tok(text, add_special_tokens=False).input_ids
        return self._prompts[case.id]

    # one-off backends (timed into backend_ms) ---------------------------------------------------------------
    def backend(self, engine: str):
        if engine in self._backends:
            return self._backends[engine]
        t0 = time.perf_counter()
        if engine in (OUTLINES_JSON, OUTLINES_CFG):
            import outlines
            from outlines.backends import LLGuidanceBackend, OutlinesCoreBackend
            om = outlines.from_transformers(self.model, self.tok)
            b = OutlinesCoreBackend(om) if engine == OUTLINES_JSON else LLGuidanceBackend(om)
        elif engine in (XGRAMMAR, XGRAMMAR_TAGS):
            import xgrammar as xgr
            info = xgr.TokenizerInfo.from_huggingface(self.tok, vocab_size=self.model.config.vocab_size)
            b = xgr.GrammarCompiler(info)
        else:
            raise ValueError(engine)
        self.backend_ms[engine] = 1e3 * (time.perf_counter() - t0)
        self._backends[engine] = b
        return b

    # per call: build the grammar / processor (timed as setup_ms) ----------------------------------------------
    def setup(self, engine: str, case) -> Prepared:
        tools = case.functions
        if engine in (TO_EOS, STOP_AT_END):
            return Prepared()
        if engine in OURS:
            # What CallPlan compiles (uncached here, so every call pays it), then the plan / processor itself,
            # whose compile is now a cache hit, as in an application that reuses its tools.
            compile_tools(tools, warn=False, **Options().compile_kwargs())
            if engine == LOGITS_PROCESSOR:
                return Prepared(processor=ToolCallLogitsProcessor(self.tok, tools, tool_choice=self.tool_choice))
            return Prepared(plan=CallPlan(self.tok, tools, tool_choice=self.tool_choice))
        if engine == OUTLINES_JSON:
            from outlines.types import JsonSchema
            term = JsonSchema(body_schema(tools))
            return Prepared(processor=self.backend(engine).get_json_schema_logits_processor(
                term.schema, term.whitespace_pattern))
        if engine == OUTLINES_CFG:
            from outlines.types import CFG
            # The grammar our engines run (what CallPlan compiles for tool_choice="required"), compiled here.
            grammar = compile_tools(tools, warn=False, **Options().compile_kwargs())
            term = CFG(grammar.body_lark)
            return Prepared(processor=self.backend(engine).get_cfg_logits_processor(term.definition))
        if engine == XGRAMMAR:
            import xgrammar as xgr
            import xgrammar.contrib.hf
            compiled = self.backend(engine).compile_json_schema(json.dumps(body_schema(tools)))
            return Prepared(processor=xgr.contrib.hf.LogitsProcessor(compiled))
        if engine == XGRAMMAR_TAGS:
            import xgrammar as xgr
            import xgrammar.contrib.hf
            # Free text until the trigger, then the call list, then the turn ends (stop_after_first). In required
            # mode the prompt already ends with the trigger, so the tag's begin is not required again.
            tag = {"type": "tag", "begin": TOOL_CALLS,
                   "content": {"type": "json_schema", "json_schema": body_schema(tools)}, "end": ""}
            fmt = ({"type": "triggered_tags", "triggers": [TOOL_CALLS], "tags": [tag], "stop_after_first": True}
                   if self.mode == "auto" else tag["content"])
            compiled = self.backend(engine).compile_structural_tag(
                json.dumps({"type": "structural_tag", "format": fmt}))
            return Prepared(processor=xgr.contrib.hf.LogitsProcessor(compiled))
        raise ValueError(f"unknown engine {engine!r}")

    @property
    def tool_choice(self) -> str:
        return "auto" if self.mode == "auto" else "required"

    def prompted_trigger(self, engine: str) -> bool:
        """Does this engine's prompt end with the trigger (it cannot wait for the model to write it)?"""
        return self.mode == "required" or engine not in WAITS_FOR_TRIGGER

    # per call: generate (timed as wall) -----------------------------------------------------------------------
    def run(self, engine: str, case, prep: Prepared) -> dict:
        """Generate; returns body (what follows the prompt, trigger included when the model wrote it),
        new_tokens, forced, and engine extras. In required mode the trigger our loop forces is not counted."""
        if engine in (FAST_FORWARD, NO_FAST_FORWARD):
            from constrained_fc.runtime.decoding import generate
            n_trig = len(self.trigger_ids) if self.mode == "required" else 0
            r = generate(self.model, self.tok, case.messages, case.functions, tool_choice=self.tool_choice,
                         fast_forward=engine == FAST_FORWARD, max_new_tokens=self.max_new_tokens + n_trig,
                         prompt_cache=False)
            text = r.text
            if n_trig and text.startswith(TOOL_CALLS):
                text = text[len(TOOL_CALLS):]
            return {"body": text, "new_tokens": r.stats.tokens_generated - n_trig,
                    "forced": r.stats.tokens_forced - n_trig if engine == FAST_FORWARD else 0,
                    "prompt_tokens": r.stats.prompt_tokens, "mask_us_per_token": r.stats.mask_us_per_token,
                    "loop_forward_passes": r.stats.forward_passes}
        trigger = self.trigger_ids if self.prompted_trigger(engine) else []
        ids = self.prompt_ids(case) + trigger
        x = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        procs = [prep.processor] if prep.processor is not None else []
        stops = [CallListStop(self.tok, len(ids))] if engine == STOP_AT_END else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                      max_new_tokens=self.max_new_tokens,
                                      logits_processor=LogitsProcessorList(procs),
                                      stopping_criteria=StoppingCriteriaList(stops),
                                      pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
        gen = out[0, len(ids):].tolist()
        new_tokens = len(gen)
        while gen and gen[-1] in self.stop_ids:
            gen.pop()
        extra = {}
        if engine == LOGITS_PROCESSOR:
            extra["mask_us_per_token"] = prep.processor.mask_us_per_token
        body = self.tok.decode(gen, skip_special_tokens=False)
        if trigger and self.mode == "auto":
            body = TOOL_CALLS + body  # scored like the others: the call follows a trigger
        return {"body": body, "new_tokens": new_tokens, "forced": 0,
                "prompt_tokens": len(ids) - len(trigger), **extra}

    # scoring ----------------------------------------------------------------------------------------------------
    def called(self, body: str) -> bool:
        """Did the output start a call list? (In required mode every prompt ends with the trigger.)"""
        return self.mode == "required" or TOOL_CALLS in body

    def valid(self, case, body: str) -> bool:
        """Does the output hold a call list whose names exist and whose arguments validate? Scored on the first
        complete JSON list in the body (what a user of the unconstrained rows would extract), with our
        canonical grammar, falling back to flexible whitespace for peers that space JSON differently."""
        if case.id not in self._score_grammars:
            self._score_grammars[case.id] = (compile_tools(case.functions, warn=False),
                                             compile_tools(case.functions, whitespace="flexible", warn=False))
        if not self.called(body):
            return False  # the model answered in text: no call
        body = call_text(body)
        span = call_list_span(body)
        text = body[span[0]:span[1]] if span else body.strip()
        for g in self._score_grammars[case.id]:
            try:
                calls = g.parse(g.trigger + text)
            except GrammarMismatchError:
                continue
            return bool(calls) and all(c.valid for c in calls)
        return False


def time_call(bench: Bench, engine: str, case) -> dict:
    """One timed call: setup (grammar / processor) apart, then the generate call."""
    rec = {"engine": engine, "case": case.id, "category": case.category}
    try:
        t0 = time.perf_counter()
        prep = bench.setup(engine, case)
        rec["setup_ms"] = 1e3 * (time.perf_counter() - t0)
        bench.meter.reset()
        t0 = time.perf_counter()
        out = bench.run(engine, case, prep)
        rec["wall_s"] = time.perf_counter() - t0
    except Exception as e:  # a peer that cannot handle this schema: recorded, the run goes on
        rec["error"] = f"{type(e).__name__}: {str(e).strip()[:300]}"
        return rec
    fwd = bench.meter.calls
    rec["forward_passes"] = len(fwd)
    rec["decode_forward_ms"] = [1e3 * s for n, s in fwd if n == 1]
    body = out.pop("body")
    rec.update(out)
    rec["valid"] = bench.valid(case, body)
    rec["called"] = bench.called(body)
    rec["list_closed"] = call_list_span(call_text(body)) is not None
    rec["output"] = body[:300]
    return rec


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(engine: str, records: list[dict], baselines: dict[str, dict[str, float]] | None = None,
              backend_ms: float | None = None) -> dict:
    """One speed row from an engine's call records; `baselines`: {baseline engine: {case id: wall_s}}."""
    ok = [r for r in records if "error" not in r]
    errors = [r for r in records if "error" in r]
    row: dict[str, Any] = {"kind": "speed", "engine": engine, "n": len(ok)}
    if errors:
        row["errors"] = len(errors)
        row["error"] = errors[0]["error"]
    if not ok:
        return row
    wall = sum(r["wall_s"] for r in ok)
    tokens = sum(r["new_tokens"] for r in ok)
    row.update({
        "wall_s_per_call": statistics.median(r["wall_s"] for r in ok),
        "tokens_per_s": tokens / wall if wall > 0 else None,
        "new_tokens_per_call": tokens / len(ok),
        "forward_passes_per_call": sum(r["forward_passes"] for r in ok) / len(ok),
        "forced_share": sum(r["forced"] for r in ok) / tokens if tokens else 0.0,
        "valid_calls": sum(bool(r["valid"]) for r in ok) / len(ok),
        "called": sum(bool(r.get("called", True)) for r in ok) / len(ok),
        "setup_ms": statistics.median(r["setup_ms"] for r in ok),
    })
    mine = {r["case"]: r["wall_s"] for r in ok}
    baselines = baselines or {}
    if TO_EOS in baselines:
        row["ratio_vs_to_eos"] = speed_ratio(baselines[TO_EOS], mine)
    if STOP_AT_END in baselines:
        row["ratio_to_unconstrained"] = speed_ratio(baselines[STOP_AT_END], mine)
    masks = [r["mask_us_per_token"] for r in ok if r.get("mask_us_per_token")]
    if masks:
        row["mask_us_in_loop"] = statistics.median(masks)
    if backend_ms is not None:
        row["backend_ms"] = backend_ms
    return row


def walls(records: list[dict], engine: str) -> dict[str, float]:
    return {r["case"]: r["wall_s"] for r in records if r["engine"] == engine and "error" not in r}


def measure_engine(bench: Bench, engine: str, cases, warmup: bool = True, baselines=None) -> tuple[dict, list]:
    """Warm up once (untimed), time every case, and summarize: (row, call records)."""
    if warmup and cases:
        time_call(bench, engine, cases[0])
    records = [time_call(bench, engine, c) for c in cases]
    return summarize(engine, records, baselines, bench.backend_ms.get(engine)), records


# -- report -----------------------------------------------------------------------------------------------------
SPEED_COLUMNS = ["engine", "n", "wall_s_per_call", "ratio_to_unconstrained", "ratio_vs_to_eos", "tokens_per_s",
                 "new_tokens_per_call", "forward_passes_per_call", "forced_share", "called", "valid_calls",
                 "setup_ms"]
SPEED_HEADERS = ["engine", "n", "wall s/call (median)", "× vs stop-at-call-end", "× vs to-EOS", "tokens/s",
                 "new tokens/call", "forward passes/call", "forced share", "called", "valid calls",
                 "setup ms (median)"]
MASK_COLUMNS = ["tools", "compile_ms", "matcher_ms", "mask_us_p50", "mask_us_p99", "mask_share_p50_pct",
                "mask_share_p99_pct", "wait_us_p50", "wait_us_p99", "wait_share_p99_pct"]
MASK_HEADERS = ["tools", "compile_tools ms", "matcher ms", "mask µs p50", "mask µs p99",
                "% of a forward (p50)", "% of a forward (p99)", "waited µs p50 (overlapped)",
                "waited µs p99 (overlapped)", "waited % of a forward (p99)"]


def add_mask_shares(mask_rows: list[dict], fwd_ms: float) -> None:
    """Each mask figure as a share of one decode forward pass of `fwd_ms`."""
    for r in mask_rows:
        r["forward_ms"] = round(fwd_ms, 2)
        for key, share in (("mask_us_p50", "mask_share_p50_pct"), ("mask_us_p99", "mask_share_p99_pct"),
                           ("wait_us_p99", "wait_share_p99_pct")):
            if key in r:
                r[share] = round(100 * r[key] / (1e3 * fwd_ms), 3)


def forward_pass(model, tok, case):
    """A real single-token decode forward over a BFCL prompt's KV cache (kept at the prompt's length), for the
    mask rows: the loop computes each mask in the background while such a pass runs."""
    from transformers import DynamicCache

    from constrained_fc.chat import encode_prompt
    ids = encode_prompt(tok, case.messages, case.functions)
    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
    x = torch.tensor([[ids[-1]]])

    def run():
        with torch.inference_mode():
            model(input_ids=x, past_key_values=cache, use_cache=True)
        cache.crop(-1)  # back to the prompt length
    return run


def targets(rows: list[dict], categories) -> list[str]:
    lines = []
    for cat in categories:
        by = {r["engine"]: r for r in rows if r.get("category") == cat}
        ff = by.get(FAST_FORWARD, {})
        ratio = ff.get("ratio_to_unconstrained")
        if ratio is None:
            lines.append(f"- {cat}: fast-forward ratio not measured")
            continue
        verdict = "met" if ratio >= TARGET_SPEEDUP else "NOT met"
        lines.append(f"- {cat}: fast-forward is {ratio:.2f}× unconstrained (stop at call end) — target "
                     f"≥ {TARGET_SPEEDUP}× {verdict}")
        ff_wall = ff.get("_walls", {})
        for peer in PEERS:
            p = by.get(peer)
            if not p or "_walls" not in p:
                lines.append(f"  - vs {peer}: not measured ({(p or {}).get('error', 'skipped')})")
                continue
            r = speed_ratio(p["_walls"], ff_wall)
            if r is None:
                lines.append(f"  - vs {peer}: no common case")
            else:
                lines.append(f"  - vs {peer}: fast-forward {r:.2f}× ({'faster' if r > 1 else 'NOT faster'})")
    return lines


def plot(path, rows: list[dict], mask_rows: list[dict], categories) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = [e for e in ENGINES if any(r["engine"] == e and r.get("ratio_to_unconstrained") for r in rows)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, max(4.0, 0.6 * len(engines) + 1.5)),
                                   gridspec_kw={"width_ratios": [3, 2]})
    cats = [c for c in categories if any(r.get("category") == c for r in rows)]
    h = 0.8 / max(1, len(cats))
    for j, cat in enumerate(cats):
        vals = []
        for e in engines:
            r = next((r for r in rows if r["engine"] == e and r.get("category") == cat), {})
            vals.append(r.get("ratio_to_unconstrained") or 0.0)
        ys = [i + (j - (len(cats) - 1) / 2) * h for i in range(len(engines))]
        ax1.barh(ys, vals, height=h, label=f"BFCL {cat}")
    ax1.set_yticks(range(len(engines)))
    ax1.set_yticklabels(engines)
    ax1.invert_yaxis()
    ax1.axvline(1.0, ls="--", color="grey", lw=1)
    ax1.axvline(TARGET_SPEEDUP, ls="--", color="red", lw=1, label=f"target {TARGET_SPEEDUP}×")
    ax1.set_xlabel("speed vs unconstrained (stop at call end), × (higher is faster)")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.set_title("End-to-end wall time per call (median)")
    if mask_rows:
        xs = [r["tools"] for r in mask_rows]
        ax2.plot(xs, [r["mask_us_p50"] for r in mask_rows], "o-", label="p50")
        ax2.plot(xs, [r["mask_us_p99"] for r in mask_rows], "s--", label="p99")
        ax2.set_xscale("log")
        ax2.set_xticks(xs)
        ax2.set_xticklabels([str(x) for x in xs])
        ax2.set_xlabel("tools in the list (BFCL)")
        ax2.set_ylabel("µs per token mask")
        ax2.legend()
    ax2.set_title("Mask cost per token")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main -------------------------------------------------------------------------------------------------------
CACHE_COLUMNS = ["scenario", "n", "wall_no_cache_s", "wall_cache_s", "speedup", "reused_share"]


def measure_prompt_cache(model, tok, cases, max_new_tokens: int) -> list[dict]:
    """The prompt cache, with and without, on the same cases in one run (a fresh cache per case):
    - "same tools, next question": after one call with a case's tools, a second question with the same tools;
    - "3-step agent": a call, its tool result appended, a second step, another result, a third step;
    - "next user turn": after one turn (its reply kept in the conversation), the user asks again.
    Wall times are medians over the cases; speedup = without / with."""
    from constrained_fc.runtime.decoding import generate
    from constrained_fc.runtime.prompt_cache import PromptCache

    def agent(case, cache) -> float:
        msgs = list(case.messages)
        t0 = time.perf_counter()
        for step in range(3):
            r = generate(model, tok, msgs, case.functions, tool_choice="required" if step == 0 else "auto",
                         max_new_tokens=max_new_tokens, prompt_cache=cache)
            msgs.append(r.to_message())
            for c in r.tool_calls:
                msgs.append({"role": "tool", "tool_call_id": c.id, "content": json.dumps({"status": "ok"})})
            if not r.tool_calls:
                break
        return time.perf_counter() - t0

    def with_and_without(messages, tools, cache, into: dict) -> None:
        """One prompt timed with `cache` (holding what came before), then without any cache."""
        t0 = time.perf_counter()
        r = generate(model, tok, messages, tools, max_new_tokens=max_new_tokens, prompt_cache=cache)
        into["on"].append(time.perf_counter() - t0)
        into["reused"].append(r.stats.prompt_tokens_reused / max(r.stats.prompt_tokens, 1))
        t0 = time.perf_counter()
        generate(model, tok, messages, tools, max_new_tokens=max_new_tokens, prompt_cache=False)
        into["off"].append(time.perf_counter() - t0)

    rows, steps = [], {"off": [], "on": []}
    second, turn = {"off": [], "on": [], "reused": []}, {"off": [], "on": [], "reused": []}
    for case in tqdm(cases, desc="prompt cache"):
        cache = PromptCache()
        first = generate(model, tok, case.messages, case.functions, max_new_tokens=max_new_tokens,
                         prompt_cache=cache)
        # The next user turn of the same conversation (first, while the cache holds the first turn).
        again = case.messages + [first.to_message()]
        again += [{"role": "tool", "tool_call_id": c.id, "content": json.dumps({"status": "ok"})}
                  for c in first.tool_calls]
        again += [{"role": "assistant", "content": "Done."}] if first.tool_calls else []
        again += [{"role": "user", "content": "Now the same again, please."}]
        with_and_without(again, case.functions, cache, turn)
        follow = case.messages[:-1] + [{"role": "user", "content": "Also, please: " + case.messages[-1]["content"]}]
        with_and_without(follow, case.functions, cache, second)
        steps["on"].append(agent(case, PromptCache()))
        steps["off"].append(agent(case, False))
    for scenario, d in (("same tools, next question", second), ("3-step agent", steps), ("next user turn", turn)):
        off, on = statistics.median(d["off"]), statistics.median(d["on"])
        row = {"kind": "prompt_cache", "scenario": scenario, "n": len(d["on"]), "wall_no_cache_s": round(off, 3),
               "wall_cache_s": round(on, 3), "speedup": round(off / on, 2) if on else None}
        if d.get("reused"):
            row["reused_share"] = round(statistics.median(d["reused"]), 3)
        rows.append(row)
    return rows


BATCH_COLUMNS = ["batch", "n", "wall_s", "calls_per_s", "speedup", "valid_calls", "same_as_batch_1"]


def measure_batch(model, tok, cases, sizes, max_new_tokens: int) -> list[dict]:
    """Throughput of our loop when `generate` gets a list of conversations (one batch): the same cases at
    each batch size, in one run. calls/s = valid calls written / wall time; speedup against batch 1;
    same_as_batch_1 = the share of cases whose greedy output text equals batch 1's."""
    from constrained_fc.runtime.decoding import generate
    rows, texts = [], {}
    generate(model, tok, [cases[0].messages] * max(sizes), [cases[0].functions] * max(sizes),
             max_new_tokens=8)  # warm-up: the first batch shape of each size is slow
    for size in sizes:
        t0 = time.perf_counter()
        results = []
        for i in tqdm(range(0, len(cases), size), desc=f"batch {size}"):
            chunk = cases[i:i + size]
            results += generate(model, tok, [c.messages for c in chunk], [c.functions for c in chunk],
                                max_new_tokens=max_new_tokens)
        wall = time.perf_counter() - t0
        valid = sum(len(r.valid_calls) for r in results)
        texts[size] = [r.text for r in results]
        rows.append({"kind": "batch", "batch": size, "n": len(cases), "wall_s": round(wall, 2),
                     "calls_per_s": round(valid / wall, 3) if wall else None, "valid_calls": valid})
    base = rows[0]["calls_per_s"] if rows and rows[0]["batch"] == 1 else None
    for row in rows:
        row["speedup"] = round(row["calls_per_s"] / base, 2) if base and row["calls_per_s"] else None
        if 1 in texts:
            same = sum(a == b for a, b in zip(texts[1], texts[row["batch"]]))
            row["same_as_batch_1"] = round(same / len(cases), 3)
    return rows


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0], "speed")
    ap.set_defaults(limit=DEFAULT_LIMIT)
    add_model_flag(ap)
    ap.add_argument("--mode", choices=["auto", "required"], default="auto",
                    help="auto: the model decides when to call (the product); required: every prompt ends with "
                         "the trigger (for a model that does not call by itself)")
    ap.add_argument("--categories", nargs="+", default=["simple", "multiple"], choices=["simple", "multiple"])
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--skip-peers", action="store_true", help="leave out outlines and xgrammar")
    ap.add_argument("--engines", nargs="+", default=None, help="run only these engines (names as in the table)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50, 200], help="tool counts for the mask rows")
    ap.add_argument("--mask-steps", type=int, default=1000, help="mask samples per tool list")
    ap.add_argument("--repeat", type=int, default=3, help="compile repeats per tool list")
    ap.add_argument("--prompt-cache-cases", type=int, default=20,
                    help="BFCL multiple cases for the prompt-cache rows (0: skip)")
    ap.add_argument("--prompt-cache-only", action="store_true", help="run only the prompt-cache rows")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8],
                    help="batch sizes for the throughput rows (BFCL simple; include 1 for the ratios)")
    ap.add_argument("--batch-cases", type=int, default=24, help="BFCL simple cases for the throughput rows (0: skip)")
    ap.add_argument("--batch-only", action="store_true", help="run only the batch throughput rows")
    ap.add_argument("--mask-only", action="store_true",
                    help="run only the mask rows (the forward pass they are compared with is timed on its own)")
    ap.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES,
                    help="start no new case after this many minutes (the cases done so far are reported)")
    args = ap.parse_args(argv)
    started = time.perf_counter()

    from constrained_fc.eval.data import load_bfcl
    from constrained_fc.model import load_model
    model, tok = load_model(args.model)
    batch_rows = []
    if args.batch_cases and not (args.prompt_cache_only or args.mask_only):
        batch_cases = load_bfcl("simple", data_dir=args.data, limit=args.batch_cases)
        batch_rows = measure_batch(model, tok, batch_cases, args.batch_sizes, args.max_new_tokens)
    if args.batch_only:
        md = ("# Batched decoding (BFCL simple)\n\n" + md_table(batch_rows, BATCH_COLUMNS) + "\n\n"
              f"torch threads {torch.get_num_threads()}, max_new_tokens {args.max_new_tokens}.\n")
        out = write_results(args.out, batch_rows, md)
        print(md)
        print(f"wrote {out}")
        return 0
    if args.mask_only:
        case = load_bfcl("simple", data_dir=args.data, limit=1)[0]
        forward = forward_pass(model, tok, case)
        mask_rows = compile_speed.measure(args.sizes, args.repeat, args.mask_steps, args.data, tokenizer=tok,
                                          overlap=forward)
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            forward()
            times.append(1e3 * (time.perf_counter() - t0))
        fwd_ms = statistics.median(times[5:])
        for r in mask_rows:
            r["kind"] = "mask"
        add_mask_shares(mask_rows, fwd_ms)
        md = ("# Mask cost per token\n\n" + md_table(mask_rows, MASK_COLUMNS, MASK_HEADERS) + "\n\n"
              f"Median single-token decode forward pass (prompt of BFCL {case.id}, timed alone): {fwd_ms:.1f} ms. "
              f"Target: mask < {MASK_SHARE_TARGET_PCT}% of a forward pass. Waited: each mask started in the "
              "background right before a real forward pass, as our loop does, and the time spent waiting for it "
              "after the pass.\n")
        out = write_results(args.out, mask_rows, md)
        print(md)
        print(f"wrote {out}")
        return 0
    cache_rows = []
    if args.prompt_cache_cases:
        cache_cases = load_bfcl("multiple", data_dir=args.data, limit=args.prompt_cache_cases)
        cache_rows = measure_prompt_cache(model, tok, cache_cases, args.max_new_tokens)
    if args.prompt_cache_only:
        md = "# Prompt cache\n\n" + md_table(cache_rows, CACHE_COLUMNS) + "\n"
        out = write_results(args.out, cache_rows, md)
        print(md)
        print(f"wrote {out}")
        return 0
    cases = [c for cat in args.categories for c in load_bfcl(cat, data_dir=args.data, limit=args.limit)]
    engines = [e for e in ENGINES if not (args.skip_peers and e in PEERS)]
    if args.engines:
        unknown = set(args.engines) - set(ENGINES)
        if unknown:
            ap.error(f"unknown engines {sorted(unknown)}; choose from {list(ENGINES)}")
        engines = [e for e in engines if e in args.engines]
    print(f"{len(cases)} cases ({', '.join(args.categories)}), {len(engines)} engines, "
          f"torch threads {torch.get_num_threads()}", flush=True)

    # 1. mask cost per token (the forward-pass share is filled in after part 2)
    mask_rows = compile_speed.measure(args.sizes, args.repeat, args.mask_steps, args.data, tokenizer=tok,
                                      overlap=forward_pass(model, tok, cases[0]))
    for r in mask_rows:
        r["kind"] = "mask"

    # 2. end to end; engines interleaved per case so drifting machine load hits them alike
    bench = Bench(model, tok, args.max_new_tokens, args.mode)
    broken: dict[str, str] = {}
    for e in tqdm(engines, desc="warm-up"):
        rec = time_call(bench, e, cases[0])
        if "error" in rec:
            broken[e] = rec["error"]
            print(f"warning: {e} failed its warm-up call and is left out: {rec['error']}", file=sys.stderr)
    records, done = [], 0
    for case in tqdm(cases, desc="cases"):
        if time.perf_counter() - started > 60 * args.max_minutes:
            print(f"warning: --max-minutes {args.max_minutes} reached after {done} of {len(cases)} cases; "
                  "reporting those", file=sys.stderr)
            break
        for e in engines:
            if e not in broken:
                records.append(time_call(bench, e, case))
        done += 1
    bench.close()

    rows = []
    for cat in list(args.categories) + ["all"]:
        recs = [r for r in records if cat == "all" or r["category"] == cat]
        base = {b: walls(recs, b) for b in (TO_EOS, STOP_AT_END)}
        for e in engines:
            if e in broken:
                row = {"kind": "speed", "engine": e, "n": 0, "error": broken[e]}
            else:
                row = summarize(e, [r for r in recs if r["engine"] == e], base, bench.backend_ms.get(e))
                row["_walls"] = walls(recs, e)
            row["category"] = cat
            rows.append(row)

    decode_ms = [ms for r in records for ms in r.get("decode_forward_ms", [])]
    fwd_ms = statistics.median(decode_ms) if decode_ms else None
    if fwd_ms:
        add_mask_shares(mask_rows, fwd_ms)

    target_lines = targets(rows, args.categories)
    for r in rows:
        r.pop("_walls", None)
    elapsed = time.perf_counter() - started

    md = ["# End-to-end tool-call speed", "",
          f"Model `{args.model}`, greedy, torch threads {torch.get_num_threads()}, "
          f"max_new_tokens {args.max_new_tokens}, first {args.limit} BFCL cases per category"
          f"{'' if done == len(cases) else f' (time limit: {done} of {len(cases)} cases run)'}, mode "
          f"`{args.mode}`: " + (
              "the prompt is the rendered conversation and the model decides when to write `[TOOL_CALLS]` "
              "(our engines, the unconstrained rows and xgrammar's triggered tags; outlines and xgrammar's JSON "
              "schema cannot wait for a trigger, so their prompt ends with it: one token less to write). "
              "Called: share of cases where a call list was started. Our loop runs with `prompt_cache=False` "
              "here, like every other engine. "
              if args.mode == "auto" else "every prompt ends with `[TOOL_CALLS]`, so every engine writes only the "
              "call body. ") + "Ratios: median wall of the baseline / median "
          "wall of the engine over the same cases (> 1 is faster). Tokens count every new token (forced, "
          "sampled and end-of-sequence); forced share is the share the fast-forward loop fed without a "
          "sampling step (0 for engines without fast-forward). Valid calls: the first complete JSON list in "
          "the output (after the trigger) parses as calls to existing tools whose arguments validate. setup ms: grammar compile / "
          "processor build per call, not in the wall time.", ""]
    for cat in list(args.categories) + ["all"]:
        md += [f"## BFCL {cat}", "", md_table([r for r in rows if r["category"] == cat], SPEED_COLUMNS,
                                              SPEED_HEADERS), ""]
    md += ["## Targets", ""] + target_lines + [""]
    base_recs = [r for r in records if r["engine"] == STOP_AT_END and "error" not in r]
    if base_recs:
        closed = sum(r["list_closed"] for r in base_recs)
        md += [f"The stop-at-call-end criterion fired on {closed} of {len(base_recs)} unconstrained outputs; the "
               "others ran to end-of-sequence or the token limit (a model that does not write the call format "
               "unprompted makes both unconstrained rows the same work).", ""]
    failed = [r for r in rows if r["category"] == "all" and r.get("error")]
    if failed:
        md += ["## Errors", ""] + [f"- {r['engine']}: {r.get('errors', 'all')} call(s): {r['error']}"
                                   for r in failed] + [""]
    if bench.backend_ms:
        md += ["One-off backend construction (not in setup or wall): " + ", ".join(
            f"{k} {v:.0f} ms" for k, v in bench.backend_ms.items()), ""]
    if batch_rows:
        md += ["## Batched decoding (BFCL simple, `generate` given a list of conversations)", "",
               md_table(batch_rows, BATCH_COLUMNS), ""]
    if cache_rows:
        md += ["## Prompt cache (BFCL multiple, the same tools again)", "",
               md_table(cache_rows, CACHE_COLUMNS), ""]
    md += ["## Mask cost per token", "",
           f"Median single-token decode forward pass: {fwd_ms:.1f} ms." if fwd_ms else "No decode forward timed.",
           f"Target: mask < {MASK_SHARE_TARGET_PCT}% of a forward pass.", "",
           md_table(mask_rows, MASK_COLUMNS, MASK_HEADERS), "",
           f"_Run took {elapsed / 60:.1f} min._"]
    light = [{k: v for k, v in r.items() if k != "decode_forward_ms"} for r in records]
    out = write_results(args.out, rows, "\n".join(md),
                        extra={"mask": mask_rows, "calls": light, "prompt_cache": cache_rows, "batch": batch_rows,
                               "settings": {"model": args.model, "limit": args.limit, "categories": args.categories,
                                            "cases_run": done, "cases_planned": len(cases),
                                            "max_new_tokens": args.max_new_tokens, "engines": engines,
                                            "decode_forward_ms_median": fwd_ms, "elapsed_s": round(elapsed, 1),
                                            "backend_ms": bench.backend_ms}})
    plot(out / "speed.png", [r for r in rows if r["category"] != "all"], mask_rows, args.categories)
    print((out / "results.md").read_text("utf-8"))
    print(f"wrote {out} in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
