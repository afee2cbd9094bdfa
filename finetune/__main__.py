"""Command line of the fine-tuning package: ``python -m finetune <command>``.

* ``synth``: generate synthetic examples from a tool catalogue and write ``train.jsonl`` / ``eval.jsonl``;
* ``data-check PATH``: load a data file in any supported format and report what loads and what is skipped.

Each command is registered by an ``_add_<command>`` function below; further commands plug in the same way.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from .data import HOLDOUTS, OBJECTIVES, load_examples, split_examples, write_jsonl
from .synth import CatalogueError, load_catalogue, synthesize


def _objective_table(columns: dict[str, list]) -> str:
    counts = {name: Counter(ex.meta.get("objective", "?") for ex in exs) for name, exs in columns.items()}
    names = list(columns)
    rows = [f"{'objective':<10}" + "".join(f"{n:>8}" for n in names)]
    for obj in list(OBJECTIVES) + sorted(set().union(*counts.values()) - set(OBJECTIVES)):
        if any(counts[n][obj] for n in names):
            rows.append(f"{obj:<10}" + "".join(f"{counts[n][obj]:>8}" for n in names))
    rows.append(f"{'total':<10}" + "".join(f"{len(columns[n]):>8}" for n in names))
    return "\n".join(rows)


def _cmd_synth(args: argparse.Namespace) -> int:
    try:
        catalogue = load_catalogue(args.catalogue)
        examples = synthesize(catalogue, args.n, seed=args.seed)
        train, evals = split_examples(examples, args.eval_fraction, seed=args.seed, holdout=args.holdout)
    except (CatalogueError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(evals, out / "eval.jsonl")
    print(f"catalogue: {catalogue.source} ({len(catalogue)} tools); seed {args.seed}; holdout {args.holdout}")
    print(f"wrote {len(train)} train and {len(evals)} eval examples to {out}")
    if args.holdout == "tools":
        seen = {name for ex in train for name in ex.called_tools}
        held = sorted({name for ex in evals for name in ex.called_tools} - seen)
        print(f"held-out tools: {', '.join(held)}")
    print(_objective_table({"train": train, "eval": evals}))
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate synthetic train/eval data from a tool catalogue",
                       description="Write DIR/train.jsonl and DIR/eval.jsonl of synthetic tool-calling examples.")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--n", type=int, default=2000, help="number of examples in all (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    p.add_argument("--catalogue", metavar="FILE", default=None,
                   help="tool catalogue JSON (default: the packaged finetune/catalogue.json)")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="share of examples for eval (default 0.1)")
    p.add_argument("--holdout", choices=HOLDOUTS, default="random",
                   help="random examples, whole tools never seen in train, or whole question templates")
    p.set_defaults(func=_cmd_synth)


def _cmd_data_check(args: argparse.Namespace) -> int:
    try:
        examples, report = load_examples(args.path, format=args.format)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    for line in report.errors[:args.max_errors]:
        print(f"  {line}")
    if len(report.errors) > args.max_errors:
        print(f"  ... and {len(report.errors) - args.max_errors} more")
    if examples:
        print(_objective_table({"loaded": examples}))
    if not examples or (args.strict and report.skipped):
        return 1
    return 0


def _add_data_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data-check", help="load a data file and report loaded / skipped records",
                       description="Load PATH with finetune.data.load_examples and print the report.")
    p.add_argument("path", metavar="PATH", help=".jsonl or .json data file")
    p.add_argument("--format", default="auto",
                   help="auto (default), function_call, messages or sharegpt (aliases: training, openai, "
                        "mistral, glaive)")
    p.add_argument("--max-errors", type=int, default=20, help="skipped records to list (default 20)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if any record is skipped")
    p.set_defaults(func=_cmd_data_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log every skipped record and decision")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(sub)
    _add_data_check(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Skipped records are listed by data-check itself; the log only repeats them when asked to.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
