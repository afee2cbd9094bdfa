"""Regenerate the README's "Results" section from the benchmarks' results folders (never edit it by hand).

    python benchmarks/report.py [--results results] [--readme README.md]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SECTIONS = [
    ("coverage", "Schema coverage", "python benchmarks/coverage.py", "coverage.png"),
    ("compile_speed", "Compile time and mask cost", "python benchmarks/compile_speed.py", None),
    ("readback", "Reading calls back", "python benchmarks/compile_speed.py --readback-only --lark", None),
    ("many_tools_recall", "Many tools: recall of today's retrieval",
     "python benchmarks/many_tools.py --recall-only --out results/many_tools_recall", None),
    ("many_tools", "Many tools: retrieval", "python benchmarks/many_tools.py --limit 100", "many_tools.png"),
    ("many_tools_parallel", "Many tools: the name prior on parallel calls",
     "python benchmarks/many_tools.py --categories parallel parallel_multiple --limit 40 --ks 5 "
     "--out results/many_tools_parallel", None),
    ("many_tools_sealtools", "Many tools: the name prior's weight, chosen on Seal-Tools",
     "python benchmarks/many_tools.py --sealtools --ks 5 --prior-weights 0 10 30 60 --limit 88 "
     "--out results/many_tools_sealtools", None),
    ("hallucination", "Hallucinated calls on BFCL", "python benchmarks/hallucination.py", "hallucination.png"),
    ("speed", "Speed against unconstrained generation and peers",
     "python benchmarks/speed.py --prompt-cache-cases 0 --batch-cases 0", "speed.png"),
    ("mask", "Mask cost per token, computed during the forward pass", "python benchmarks/speed.py --mask-only --out results/mask",
     None),
    ("batch", "Batched decoding", "python benchmarks/speed.py --batch-only --batch-cases 24 --out results/batch", None),
    ("prompt_cache", "Prompt cache", "python benchmarks/speed.py --prompt-cache-only --out results/prompt_cache",
     None),
    ("followup", "A conversation's second question: tools-block layout and prompt reuse",
     "python benchmarks/followup.py", "followup.png"),
    ("serve", "Server throughput", "python benchmarks/serve.py --limit 12 --soak 0", None),
    ("serve_soak", "Server memory soak", "python benchmarks/serve.py --soak-only --soak 200 --limit 12 --out results/serve_soak",
     None),
    ("finetune", "Fine-tuning: before and after", "python -m finetune evaluate ...", "loss.png"),
]


def build(results: Path, readme: Path) -> str:
    parts = [BEGIN, ""]
    for folder, title, command, png in SECTIONS:
        md = results / folder / "results.md"
        if not md.is_file():
            continue
        body = md.read_text("utf-8").strip()
        body = re.sub(r"^# .*\n+", "", body)  # the section title replaces the file's own
        body = re.sub(r"^(#+) ", lambda m: "#" * (len(m[1]) + 3) + " ", body, flags=re.M)
        parts += [f"### {title}", "", f"`{command}` → `{(results / folder).relative_to(ROOT).as_posix()}/`", "",
                  body, ""]
        if png and (results / folder / png).is_file():
            parts += [f"![{title}]({(results / folder / png).relative_to(ROOT).as_posix()})", ""]
    parts.append(END)
    return "\n".join(parts)


SHIPPED_BEGIN, SHIPPED_END = "<!-- shipped:begin -->", "<!-- shipped:end -->"
SHIPPED_RESULTS = "shipped"  # results/shipped/results.md: `python -m finetune evaluate --model default ...`


def shipped(results: Path) -> str:
    """The README's first-screen table: the shipped model's measured scores (or a note that none exist)."""
    md = results / SHIPPED_RESULTS / "results.md"
    body = md.read_text("utf-8").strip() if md.is_file() else "_Not measured yet._"
    body = re.sub(r"^# .*\n+", "", body)
    body = re.sub(r"^(#+) ", lambda m: "#" * (len(m[1]) + 3) + " ", body, flags=re.M)
    return "\n".join([SHIPPED_BEGIN, "", body, "", SHIPPED_END])


def _replace(text: str, begin: str, end: str, block: str) -> str:
    return text[:text.index(begin)] + block + text[text.index(end) + len(end):]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    args = ap.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text("utf-8")
    if BEGIN not in text or END not in text:
        print(f"{readme} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    results = Path(args.results).resolve()
    new = _replace(text, BEGIN, END, build(results, readme))
    if SHIPPED_BEGIN in new and SHIPPED_END in new:
        new = _replace(new, SHIPPED_BEGIN, SHIPPED_END, shipped(results))
    readme.write_text(new, "utf-8")
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
