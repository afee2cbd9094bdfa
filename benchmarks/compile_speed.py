"""Compile time and mask cost for tool lists of 1, 10, 50, 200, 500 and 1,000 tools taken from BFCL, and the
cost of reading calls back.

compile: `compile_tools` (tool schemas -> Lark text, metaschema checks included), then llguidance's matcher
construction on the embedded model's tokenizer. cached: the same list again through the runtime's grammar
cache (keyed by the tool list's content), what a repeated retrieval set or a second request pays. mask: µs per `fill_mask` while a seeded random walk writes
calls through the grammar (every step picks a random allowed token), p50 and p99; a call list's
opening masks are cached per grammar (runtime/matcher.py), so walks after the first copy them, as a
second request with the same tools does.

read-back: a config-style tool of 150 optional properties (string, integer, two-value enum, in turn) called
with every other one set, in each call format. `parse(text, trusted=True)` is what decoding does with the
text the matcher produced (json / ast, then the jsonschema check); `parse(text)` and `accepts(text)` check
text from elsewhere with llguidance first; `accepts_value` is `compile_schema(schema).accepts_value(value)`.
Bars: read-back <= 1 ms per call, accepts / accepts_value <= 50 ms. `--lark` adds the Earley parse these
replaced (seconds per text), for comparison.

    python benchmarks/compile_speed.py [--sizes 1 10 50 200 500 1000] [--repeat 5] [--out results/compile_speed]
    python benchmarks/compile_speed.py --readback-only [--lark] [--out results/readback]
    python benchmarks/compile_speed.py --bitmask    # apply step: ours vs llguidance.torch's (printed only)
"""
from __future__ import annotations

import json
import statistics
import sys
import time

from common import ROOT, md_table, parser, write_results

import torch
from tqdm import tqdm

from constrained_fc import ToolCall, compile_schema, compile_tools
from constrained_fc.eval.data import BFCL_CATEGORIES, load_bfcl
from constrained_fc.compiler.formats import FORMATS
from constrained_fc.compiler.options import Options
from constrained_fc.runtime.plan import _compile_cached, _tools_json
from constrained_fc.runtime.matcher import TokenMatcher, allocate_bitmask, apply_bitmask, unpack_bitmask


def bfcl_tools(data=None) -> list[dict]:
    """Distinct BFCL functions in file order: first one per name (769), then the other (name, schema)
    versions under a suffixed name (1,123 in all), so lists up to 1,000 tools are real BFCL schemas and
    the first 769 are the same as before."""
    seen, out, variants, versions = set(), [], [], {}
    for cat in BFCL_CATEGORIES:
        for case in load_bfcl(cat, data_dir=data):
            for fn in case.functions:
                key = json.dumps(fn, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                n = versions[fn["name"]] = versions.get(fn["name"], 0) + 1
                if n == 1:
                    out.append(fn)
                else:
                    variants.append(dict(fn, name=f"{fn['name']}_v{n}"))
    return out + variants


def compile_ms(tools, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        compile_tools(tools, warn=False, **Options().compile_kwargs())
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def cached_ms(tools, repeat: int) -> float:
    """A repeated tool list through the runtime's grammar cache (what `CallPlan` calls)."""
    args = (Options(format="mistral"), None)
    _compile_cached(_tools_json(tools), *args)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        _compile_cached(_tools_json(tools), *args)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def mask_walk(grammar, tokenizer, steps: int, seed: int = 0, overlap=None, waits=None) -> tuple[list[float], float]:
    """Random walks through the grammar; returns per-step mask times (µs) and matcher construction ms, as the
    decoding loop meets them (`done` first, then the mask). overlap: a callable run between starting the mask
    in the background and waiting for it (a model forward pass, as in the loop); the waits (µs) go to `waits`."""
    gen = torch.Generator().manual_seed(seed)
    times, build = [], []
    samples = times if overlap is None else waits
    while len(samples) < steps:
        t0 = time.perf_counter()
        m = TokenMatcher(grammar.body_lark, tokenizer)
        build.append(1e3 * (time.perf_counter() - t0))
        bitmask = allocate_bitmask(1, m.n_vocab)
        for _ in range(400):
            if m.accepting and m.done:
                break
            if overlap is not None:
                m.prefetch_mask(bitmask, 0)
                overlap()
            t0 = time.perf_counter()
            m.fill_mask(bitmask, 0)
            samples.append(1e6 * (time.perf_counter() - t0))
            if overlap is not None and len(samples) >= steps:
                break
            allowed = torch.nonzero(unpack_bitmask(bitmask, m.n_vocab)[0]).flatten()
            allowed = allowed[allowed != tokenizer.eos_token_id]
            if len(allowed) == 0:
                break
            tok = int(allowed[torch.randint(len(allowed), (1,), generator=gen)])
            if not m.consume(tok):
                break
    return times, statistics.median(build)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(sizes, repeat, steps, data=None, tokenizer=None, overlap=None) -> list[dict]:
    """Per tool count: compile time, matcher build, mask p50 / p99 (µs). overlap (a forward pass, from
    speed.py): also walk with each mask computed in the background during it, and report what was waited."""
    if tokenizer is None:
        from constrained_fc.model import load_model
        tokenizer = load_model()[1]
    pool = bfcl_tools(data)
    rows = []
    for n in tqdm(sizes, desc="tool lists"):
        tools = pool[:n]
        g = compile_tools(tools, warn=False, **Options().compile_kwargs())
        if len(tools) < n:
            raise SystemExit(f"only {len(tools)} distinct BFCL tools for --sizes {n}")
        ms = compile_ms(tools, repeat)
        times, build_ms = mask_walk(g, tokenizer, steps)
        row = {"tools": n, "compile_ms": round(ms, 2), "cached_ms": round(cached_ms(tools, repeat), 3),
               "matcher_ms": round(build_ms, 2),
               "grammar_lines": len(g.lark.splitlines()), "mask_us_p50": round(pct(times, 0.5), 1),
               "mask_us_p99": round(pct(times, 0.99), 1), "mask_samples": len(times)}
        if overlap is not None:
            waits: list[float] = []
            mask_walk(g, tokenizer, steps, seed=1, overlap=overlap, waits=waits)
            row.update(wait_us_p50=round(pct(waits, 0.5), 1), wait_us_p99=round(pct(waits, 0.99), 1))
        rows.append(row)
    return rows


READBACK_MS_PER_CALL = 1.0
ACCEPTS_MS = 50.0


def config_tool(n: int = 150) -> tuple[dict, dict]:
    """A flat object of n optional properties (string, integer, a two-value enum, in turn), and a value that
    sets every other one."""
    kinds = [{"type": "string"}, {"type": "integer"}, {"enum": ["on", "off"]}]
    schema = {"type": "object", "properties": {f"p{i:03d}": kinds[i % 3] for i in range(n)}}
    value = {f"p{i:03d}": ["abc", 42, "on"][i % 3] for i in range(0, n, 2)}
    return schema, value


def _ms(fn, repeat: int) -> tuple[float, float]:
    """(first call, median of the next `repeat`) in ms: the first builds what later calls reuse."""
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return times[0], statistics.median(times[1:])


def measure_readback(repeat: int, with_lark: bool) -> list[dict]:
    from constrained_fc.compiler.schema_compiler import lark_parser
    schema, value = config_tool()
    rows = []
    for fmt in FORMATS:
        g = compile_tools([{"name": "configure", "parameters": schema}], format=fmt, warn=False)
        text = g.render([ToolCall("configure", value)])
        (call,) = g.parse(text, trusted=True)
        assert call.valid and call.arguments == value, call.error
        row = {"case": f"{fmt} call", "chars": len(text),
               "read_ms": _ms(lambda: g.parse(text, trusted=True, validate=False), repeat)[1],
               "readback_ms": _ms(lambda: g.parse(text, trusted=True), repeat)[1]}
        first, warm = _ms(lambda: g.accepts(text), repeat)
        row.update(accepts_first_ms=first, accepts_ms=warm, parse_checked_ms=_ms(lambda: g.parse(text), repeat)[1])
        if with_lark:
            row["lark_ms"] = _ms(lambda: lark_parser(g.lark).parse(text), 1)[1]
        rows.append(row)
    grammar = compile_schema(schema, warn=False)
    text = grammar.render(value)
    first, warm = _ms(lambda: grammar.accepts_value(value), repeat)
    row = {"case": "compile_schema accepts_value", "chars": len(text), "accepts_first_ms": first,
           "accepts_ms": warm}
    if with_lark:
        row["lark_ms"] = _ms(lambda: lark_parser(grammar.lark).parse(text), 1)[1]
    rows.append(row)
    for r in rows:
        r["meets_bars"] = (r.get("readback_ms", 0) <= READBACK_MS_PER_CALL and r["accepts_ms"] <= ACCEPTS_MS)
        for k, v in r.items():
            if isinstance(v, float):
                r[k] = round(v, 3)
    return rows


READBACK_COLUMNS = ["case", "chars", "read_ms", "readback_ms", "accepts_first_ms", "accepts_ms",
                    "parse_checked_ms", "lark_ms", "meets_bars"]
READBACK_HEADERS = ["case", "text chars", "read ms (json / ast)", "read-back ms (+ jsonschema)",
                    "accepts ms (first)", "accepts ms", "parse ms (checked)", "lark Earley ms", "meets bars"]


def readback_md(rows: list[dict]) -> str:
    shown = [(c, h) for c, h in zip(READBACK_COLUMNS, READBACK_HEADERS) if any(c in r for r in rows)]
    return ("## Read-back and accepts (150 optional properties)\n\n"
            + md_table(rows, [c for c, _ in shown], [h for _, h in shown])
            + f"\n\nBars: read-back <= {READBACK_MS_PER_CALL:g} ms per call, accepts <= {ACCEPTS_MS:g} ms (warm: "
            "the first check of a grammar also builds its llguidance matcher). Medians.\n")


def measure_bitmask(vocab: int = 49152, number: int = 200) -> tuple[list[dict], float, float]:
    """µs per call of `apply_bitmask` and of llguidance's torch.compile'd `apply_token_bitmask_inplace`, on a
    mask allowing 3 tokens and on random bits; seconds to import llguidance.torch and of its first call."""
    import timeit

    t0 = time.perf_counter()
    from llguidance.torch import apply_token_bitmask_inplace
    import_s = time.perf_counter() - t0

    # One thread: a few hundred µs of work is too little to share, and the numbers stay comparable.
    torch.set_num_threads(1)
    words = (vocab + 31) // 32
    t0 = time.perf_counter()
    apply_token_bitmask_inplace(torch.zeros(1, vocab), torch.zeros(1, words, dtype=torch.int32))
    first = time.perf_counter() - t0
    rows = []
    for batch in (1, 8):
        few = torch.zeros(batch, words, dtype=torch.int32)
        few[:, 3] = 0b1011
        masks = {"3 allowed": few, "random": torch.randint(-2**31, 2**31 - 1, (batch, words), dtype=torch.int32)}
        for name, mask in masks.items():
            logits = torch.randn(batch, vocab)
            row = {"batch": batch, "mask": name}
            for key, fn in (("ours_us", apply_bitmask), ("llg_us", apply_token_bitmask_inplace)):
                best = min(timeit.repeat(lambda: fn(logits, mask), number=number, repeat=5))
                row[key] = round(1e6 * best / number, 1)
            rows.append(row)
    return rows, import_s, first


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0], "compile_speed")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50, 200, 500, 1000])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2000, help="mask samples per tool list")
    ap.add_argument("--readback-only", action="store_true",
                    help="only the read-back / accepts section (default --out results/readback)")
    ap.add_argument("--readback-repeat", type=int, default=20)
    ap.add_argument("--lark", action="store_true", help="also time lark's Earley parse of the same texts (slow)")
    ap.add_argument("--bitmask", action="store_true", help="only time the logits-masking step (see matcher.py)")
    args = ap.parse_args(argv)
    if args.bitmask:
        rows, import_s, first = measure_bitmask()
        for r in rows:
            print(r)
        print(f"llguidance.torch: import {import_s:.2f} s, first call (torch.compile) {first:.2f} s")
        return 0
    readback = measure_readback(args.readback_repeat, args.lark)
    for r in readback:
        print(r)
    ok = all(r["meets_bars"] for r in readback)
    if args.readback_only:
        out = args.out if args.out != ap.get_default("out") else str(ROOT / "results" / "readback")
        write_results(out, readback, "# Reading calls back\n\n" + readback_md(readback))
        print(f"wrote {out}")
        return 0 if ok else 1
    rows = measure(args.sizes, args.repeat, args.steps, args.data)
    for r in rows:
        print(r)
    md = "# Compile time and mask cost\n\n" + md_table(
        rows, ["tools", "compile_ms", "cached_ms", "matcher_ms", "grammar_lines", "mask_us_p50", "mask_us_p99"],
        ["tools", "compile_tools ms (median)", "repeated list ms (cache)", "llguidance matcher ms",
         "grammar lines", "mask µs p50", "mask µs p99"]) + "\n\n" + readback_md(readback)
    write_results(args.out, rows, md, {"readback": readback})
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
