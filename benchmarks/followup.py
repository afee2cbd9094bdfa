"""A conversation's second question: where the tools block sits, and what the prompt cache saves on the turn.

Each item is a two-turn conversation built from BFCL v3 (test data, only evaluated on): turn 1 is a `simple`
question (drawn with a fixed seed) answered by its ground-truth call, the tool's result and a short text; turn 2
is a question of the chosen category. The tools offered are turn 2's functions plus turn 1's. The model answers
turn 2 with `generate(..., tool_choice="auto")`, scored by the BFCL AST checker (`finetune.evaluate.score`).

Two layouts of the same chat template (`constrained_fc.chat.chat_template`): `first`, the tools block in the
first user message (the product's), and `last`, in the last user message (Mistral's; the shipped adapter's
multi-turn training data used it). Single-turn prompts are the same in both. For each item the prompt cache is
first given turn 1's prompt (one prefill), as a server holding the conversation would have it; the turn-2 row
then reports how much of its prompt was reused and its prefill time. Turn 2's output does not depend on the
cache (greedy output is identical with and without it, tested), so accuracy is read from the same run.

    python benchmarks/followup.py [--model default] [--categories simple multiple parallel irrelevance]
        [--limit 40] [--layouts first last] [--max-new-tokens 128] [--out results/followup] [--data DIR]
"""
from __future__ import annotations

import json
import random
import statistics

from common import add_model_flag, md_table, model_label, parser, write_results

import torch
from tqdm import tqdm

from constrained_fc.chat import TOOLS_IN, chat_template, uses_our_template
from constrained_fc.eval.data import load_bfcl
from constrained_fc.runtime.decoding import generate
from constrained_fc.runtime.prompt_cache import PromptCache
from finetune.evaluate import EvalItem, score

DEFAULT_LIMIT = 40
COLUMNS = ["layout", "category", "n", "ast_accuracy", "decision_ok", "prompt_tokens", "reused_share",
           "prefill_ms"]


def ground_truth_call(entry: dict, call_id: str) -> dict:
    """One BFCL ground-truth entry ({name: {param: [acceptable values]}}) as an OpenAI tool call: the first
    acceptable value of each parameter ("" means it may be left out)."""
    name, params = next(iter(entry.items()))
    args = {p: next(v for v in values if v != "") for p, values in params.items() if any(v != "" for v in values)}
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def build_items(categories, limit: int, data_dir=None, seed: int = 0) -> list[EvalItem]:
    firsts = load_bfcl("simple", data_dir=data_dir)
    rng = random.Random(seed)
    items = []
    for category in categories:
        for case in load_bfcl(category, data_dir=data_dir, limit=limit):
            first = rng.choice([c for c in firsts if c.id != case.id])
            calls = [ground_truth_call(g, f"call_{i}") for i, g in enumerate(first.ground_truth)]
            turn1 = [m for m in first.messages if m["role"] == "user"][-1:]
            messages = turn1 + [{"role": "assistant", "content": None, "tool_calls": calls}]
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"result": "ok"})}
                         for c in calls]
            messages += [{"role": "assistant", "content": "Done: the result is ok."}]
            messages += [m for m in case.messages if m["role"] == "user"][-1:]
            names = {f["name"] for f in case.functions}
            tools = case.functions + [f for f in first.functions if f["name"] not in names]
            items.append(EvalItem(set=category, id=f"{first.id}+{case.id}", messages=messages, tools=tools,
                                  ground_truth=case.ground_truth, category=category))
    return items


def run_layout(model, tok, items, layout: str, max_new_tokens: int) -> list[dict]:
    tok.chat_template = chat_template(layout)
    records = []
    for item in tqdm(items, desc=f"tools in the {layout} user message"):
        cache = PromptCache()
        first_turn = [m for m in item.messages if m["role"] == "user"][:1]
        generate(model, tok, first_turn, item.tools, max_new_tokens=1, prompt_cache=cache)  # turn 1's prompt
        r = generate(model, tok, item.messages, item.tools, tool_choice="auto", max_new_tokens=max_new_tokens,
                     prompt_cache=cache)
        rec = score(item, [(c.name, c.arguments) for c in r.tool_calls] or None)
        rec.update(layout=layout, category=item.set, id=item.id, prompt_tokens=r.stats.prompt_tokens,
                   reused=r.stats.prompt_tokens_reused, prefill_ms=r.stats.prompt_ms, text=r.text[:300])
        records.append(rec)
    return records


def summarize(records: list[dict]) -> list[dict]:
    rows = []
    for key in dict.fromkeys((r["layout"], r["category"]) for r in records):
        rs = [r for r in records if (r["layout"], r["category"]) == key]
        rows.append({"layout": key[0], "category": key[1], "n": len(rs),
                     "ast_accuracy": round(sum(r["turn_ok"] for r in rs) / len(rs), 3),
                     "decision_ok": round(sum(r["decision_ok"] for r in rs) / len(rs), 3),
                     "prompt_tokens": int(statistics.median(r["prompt_tokens"] for r in rs)),
                     "reused_share": round(statistics.median(r["reused"] / r["prompt_tokens"] for r in rs), 3),
                     "prefill_ms": round(statistics.median(r["prefill_ms"] for r in rs), 1)})
    return rows


def plot(rows: list[dict], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layouts = list(dict.fromkeys(r["layout"] for r in rows))
    categories = list(dict.fromkeys(r["category"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(layouts)
    for j, layout in enumerate(layouts):
        by = {r["category"]: r for r in rows if r["layout"] == layout}
        xs = [i + j * width for i in range(len(categories))]
        axes[0].bar(xs, [by[c]["ast_accuracy"] for c in categories], width, label=f"tools in {layout} user msg")
        axes[1].bar(xs, [by[c]["prefill_ms"] for c in categories], width, label=f"tools in {layout} user msg")
    for ax, title in zip(axes, ("turn-2 AST accuracy", "turn-2 prefill (ms, median)")):
        ax.set_xticks([i + width * (len(layouts) - 1) / 2 for i in range(len(categories))], categories)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0], "followup")
    add_model_flag(ap)
    ap.add_argument("--categories", nargs="+", default=["simple", "multiple", "parallel", "irrelevance"])
    ap.add_argument("--layouts", nargs="+", default=list(TOOLS_IN), choices=TOOLS_IN)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="which simple question opens each conversation")
    args = ap.parse_args(argv)
    from constrained_fc.model import load_model
    model, tok = load_model(args.model)
    if not uses_our_template(tok):
        ap.error("this model's tokenizer has its own chat template: the tools-block layout is not ours to choose")
    items = build_items(args.categories, DEFAULT_LIMIT if args.limit is None else args.limit, args.data, args.seed)
    print(f"{len(items)} two-turn conversations, layouts {args.layouts}, torch threads {torch.get_num_threads()}",
          flush=True)
    records = []
    for layout in args.layouts:
        records += run_layout(model, tok, items, layout, args.max_new_tokens)
    rows = summarize(records)
    md = (f"# A conversation's second question ({model_label(args.model)})\n\n"
          "Turn 1: a BFCL `simple` question answered by its ground-truth call, the tool's result and a short "
          "text; turn 2: a question of the category (tools: both turns' functions). `auto`, greedy. "
          "`reused_share`: the share of turn 2's prompt served by the prompt cache after turn 1's prompt; "
          "`prefill_ms`: turn 2's prompt time.\n\n" + md_table(rows, COLUMNS) + "\n")
    out = write_results(args.out, rows, md)
    with open(out / "records.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    plot(rows, out / "followup.png")
    print(md)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
