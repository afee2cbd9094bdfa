"""Compile time and mask cost for tool lists of 1, 10, 50 and 200 tools taken from BFCL.

compile: `compile_tools` (tool schemas -> Lark text, metaschema checks included), then llguidance's matcher
construction on the embedded model's tokenizer. mask: µs per `fill_mask` while a seeded random walk writes
calls through the grammar (every step picks a random allowed token), p50 and p99.

    python benchmarks/compile_speed.py [--sizes 1 10 50 200] [--repeat 5] [--out results/compile_speed]
"""
from __future__ import annotations

import statistics
import sys
import time

from common import md_table, parser, write_results

import torch
from tqdm import tqdm

from constrained_fc import compile_tools
from constrained_fc.data import BFCL_CATEGORIES, load_bfcl
from constrained_fc.logits_processor import DEFAULT_MAX_ARRAY_ITEMS, DEFAULT_MAX_CALLS, DEFAULT_MAX_STRING_LENGTH
from constrained_fc.matcher import TokenMatcher, allocate_bitmask, unpack_bitmask


def bfcl_tools(data=None) -> list[dict]:
    """Distinct BFCL functions in file order (400+ across the categories)."""
    seen, out = set(), []
    for cat in BFCL_CATEGORIES:
        for case in load_bfcl(cat, data_dir=data):
            for fn in case.functions:
                if fn["name"] not in seen:
                    seen.add(fn["name"])
                    out.append(fn)
    return out


def compile_ms(tools, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        compile_tools(tools, max_calls=DEFAULT_MAX_CALLS, max_string_length=DEFAULT_MAX_STRING_LENGTH,
                      max_array_items=DEFAULT_MAX_ARRAY_ITEMS,
                      warn=False)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def mask_walk(grammar, tokenizer, steps: int, seed: int = 0) -> tuple[list[float], float]:
    """Random walks through the grammar; returns per-step mask times (µs) and matcher construction ms."""
    gen = torch.Generator().manual_seed(seed)
    times, build = [], []
    while len(times) < steps:
        t0 = time.perf_counter()
        m = TokenMatcher(grammar.body_lark, tokenizer)
        build.append(1e3 * (time.perf_counter() - t0))
        bitmask = allocate_bitmask(1, m.n_vocab)
        for _ in range(400):
            if m.accepting and m.done:
                break
            t0 = time.perf_counter()
            m.fill_mask(bitmask, 0)
            times.append(1e6 * (time.perf_counter() - t0))
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


def measure(sizes, repeat, steps, data=None, tokenizer=None) -> list[dict]:
    if tokenizer is None:
        from constrained_fc.model import load_model
        tokenizer = load_model()[1]
    pool = bfcl_tools(data)
    rows = []
    for n in tqdm(sizes, desc="tool lists"):
        tools = pool[:n]
        g = compile_tools(tools, max_calls=DEFAULT_MAX_CALLS, max_string_length=DEFAULT_MAX_STRING_LENGTH,
                      max_array_items=DEFAULT_MAX_ARRAY_ITEMS,
                          warn=False)
        ms = compile_ms(tools, repeat)
        times, build_ms = mask_walk(g, tokenizer, steps)
        rows.append({"tools": n, "compile_ms": round(ms, 2), "matcher_ms": round(build_ms, 2),
                     "grammar_lines": len(g.lark.splitlines()), "mask_us_p50": round(pct(times, 0.5), 1),
                     "mask_us_p99": round(pct(times, 0.99), 1), "mask_samples": len(times)})
    return rows


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0], "compile_speed")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50, 200])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2000, help="mask samples per tool list")
    args = ap.parse_args(argv)
    rows = measure(args.sizes, args.repeat, args.steps, args.data)
    for r in rows:
        print(r)
    md = "# Compile time and mask cost\n\n" + md_table(
        rows, ["tools", "compile_ms", "matcher_ms", "grammar_lines", "mask_us_p50", "mask_us_p99"],
        ["tools", "compile_tools ms (median)", "llguidance matcher ms", "grammar lines", "mask µs p50",
         "mask µs p99"])
    write_results(args.out, rows, md)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
