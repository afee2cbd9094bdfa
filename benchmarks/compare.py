"""Two runs of one benchmark side by side, as ratios: `new / old` for every number both runs report.

Run the same benchmark command from two checkouts (e.g. a release and today's main) one right after the other
on the same machine, then compare their results folders:

    git worktree add --detach ../old v0.1
    python ../old/benchmarks/compile_speed.py --out results/old/compile_speed
    python benchmarks/compile_speed.py --out results/new/compile_speed
    python benchmarks/compare.py results/old/compile_speed results/new/compile_speed --out results/compare/compile_speed

Rows are matched on their text columns (suite, engine, category, ...) and the tool count; each numeric column
both rows have gets `new / old` (below 1: the new run is lower, e.g. faster for a time, fewer false rejects).
Per-case sections (`calls`, `examples`) are left out.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common import md_table

SKIP_SECTIONS = {"calls", "examples", "machine", "settings"}
KEY_NUMBERS = ("tools",)  # numeric columns that identify a row rather than measure it


def _key(row: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in row.items()
                        if isinstance(v, str) or (k in KEY_NUMBERS and isinstance(v, (int, float)))))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare(old: dict, new: dict) -> dict[str, list[dict]]:
    """Per section, one row per row present in both runs: its key columns, then `<column>` as old -> new and
    `<column>_ratio` (new / old)."""
    out = {}
    for section, new_rows in new.items():
        old_rows = old.get(section)
        if section in SKIP_SECTIONS or not isinstance(new_rows, list) or not isinstance(old_rows, list):
            continue
        by_key = {_key(r): r for r in old_rows if isinstance(r, dict)}
        rows = []
        for r in new_rows:
            o = by_key.get(_key(r)) if isinstance(r, dict) else None
            if o is None:
                continue
            row = dict(_key(r))
            for col, v in r.items():
                if col in KEY_NUMBERS or not _number(v) or not _number(o.get(col)):
                    continue
                row[col] = f"{o[col]:g} → {v:g}"
                row[f"{col}_ratio"] = round(v / o[col], 3) if o[col] else ("=" if v == 0 else "∞")
            rows.append(row)
        if rows:
            out[section] = rows
    return out


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", help="results folder of the old run (holds results.json)")
    ap.add_argument("new", help="results folder of the new run")
    ap.add_argument("--out", default=None, help="write results.json / results.md here")
    args = ap.parse_args(argv)
    old = json.loads((Path(args.old) / "results.json").read_text())
    new = json.loads((Path(args.new) / "results.json").read_text())
    table = compare(old, new)
    md = [f"# {Path(args.new).name}: new / old\n", f"old: `{args.old}`, new: `{args.new}`; each cell old → new, "
          "`_ratio` = new / old.\n"]
    for section, rows in table.items():
        cols = list(dict.fromkeys(c for r in rows for c in r))
        md += [f"## {section}\n", md_table(rows, cols), ""]
    text = "\n".join(md)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(table, indent=1, ensure_ascii=False))
        (out / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
