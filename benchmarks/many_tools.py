"""Hundreds of tools: retrieval recall and end-to-end BFCL accuracy with retrieval against the oracle.

The library is every distinct function of BFCL `simple`, `multiple`, `parallel` and `parallel_multiple`
(de-duplicated by name and schema). Names must be unique in one request, so a question sees the library with
its own version of any function whose name another question's function shares: each question's own
functions are hidden among all the others.

recall@k: the share of a question's ground-truth functions among the top k of the ranking (k = 1, 3, 5,
10), for the dense embedder alone, BM25 alone and the hybrid `ToolIndex` uses (also with the request embedded
whole, not ask by ask), over every question.
end to end: the embedded model (`auto`, constrained) answers each question with the question's own function
list (the oracle, BFCL's setting and the upper bound), and with `retrieve=3` and `retrieve=5` over the whole
library, once with the model choosing among the offered tools alone and once with the ranking steering the
name (`+ prior W`, `ToolIndex(prior_weight=W)`); scored with BFCL's AST checker. Prompt tokens and wall time
per call for each, with the prompt cache on as in use: a `+ prior` setup offers the same tools as the setup
before it, so its prompt comes from the cache and its s / call is the cost of a repeated prompt. Also reported:
the accuracy if a call to a functional twin of the ground truth counted (`is_twin`), since the library holds
many tools that do one job under different names and BFCL accepts only the question's own.
--sealtools: the same end to end on Seal-Tools' held-out requests over the Seal-Tools library, where the default
prior weight was chosen.
--report-only: the report (markdown, tables, plot) of the run already in --out, rebuilt from its results.json.
Offering the whole library is not a row: it does not fit the model's context (its size in tokens is
reported).

    python benchmarks/many_tools.py [--limit 50] [--categories simple multiple] [--model default]
    python benchmarks/many_tools.py --sealtools --ks 5 --prior-weights 0 10 30 60 --limit 88
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from common import add_model_flag, md_table, model_label, parser, write_results

import numpy as np
from tqdm import tqdm

from constrained_fc.eval.checker import check_calls
from constrained_fc.eval.data import load_bfcl
from constrained_fc.retrieval import (DEFAULT_DIVERSITY, DEFAULT_PRIOR_WEIGHT, MIN_STRICT_AND_WORDS, ToolIndex,
                                      asks, request_text)
from constrained_fc.runtime.session import BEYOND_ASKS_LOGITS

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple")
KS = (1, 3, 5, 10)
MODES = ("dense", "lexical", "hybrid", "hybrid, whole request", "hybrid+mmr")
RELEVANT_LOGITS = 2.0  # a tool the prior puts less than this far below the best counts as asked for


def library(cases) -> tuple[dict[str, dict], int]:
    """The shared library (the first version of each name, in file order) and its number of distinct
    (name, schema) functions."""
    base, distinct = {}, set()
    for case in cases:
        for fn in case.functions:
            distinct.add(json.dumps(fn, sort_keys=True))
            base.setdefault(fn["name"], fn)
    return base, len(distinct)


class Libraries:
    """The library as one question sees it, indexed; the shared index serves every question whose
    functions are the shared versions, others get their own (their other tools' vectors come from the
    embedding cache, so only the index is rebuilt)."""

    def __init__(self, base: dict[str, dict], diversity: float = DEFAULT_DIVERSITY):
        self.base, self.diversity = base, diversity
        self.shared = ToolIndex(list(base.values()), diversity=diversity)
        self._last = (None, None)

    def for_case(self, case) -> ToolIndex:
        own = {f["name"]: f for f in case.functions if self.base.get(f["name"]) != f}
        if not own:
            return self.shared
        key = json.dumps(own, sort_keys=True)
        if self._last[0] != key:
            tools = [own.get(name, fn) for name, fn in self.base.items()]
            self._last = (key, ToolIndex(tools, diversity=self.diversity, progress=False))
        return self._last[1]


def ground_truth_names(case) -> list[str]:
    names = []
    for gt in case.ground_truth:
        name = next(iter(gt))
        if name not in {f["name"] for f in case.functions}:  # one BFCL answer drops its namespace
            name = next((f["name"] for f in case.functions if f["name"].endswith("." + name)), name)
        names.append(name)
    return names


def recall(libs: Libraries, cases) -> dict:
    """recall@k per category and mode, plus search time."""
    hits, asked = defaultdict(list), defaultdict(list)
    search_ms = []
    for case in tqdm(cases, desc="recall"):
        index = libs.for_case(case)
        query = request_text(case.messages)
        t0 = time.perf_counter()
        picked, (hybrid, dense, lexical) = index.order(query, max(KS))
        search_ms.append(1e3 * (time.perf_counter() - t0))
        want = {index.names.index(n) for n in ground_truth_names(case)}
        # The same hybrid with the request embedded whole, not also ask by ask (what splitting buys).
        whole = index.scores(query, split=False)[0]
        modes = [("dense", dense), ("lexical", lexical), ("hybrid", hybrid), ("hybrid, whole request", whole)]
        if libs.diversity > 0:  # at 0 it is the hybrid order
            modes.append(("hybrid+mmr", None))
        for mode, s in modes:
            order = np.asarray(picked) if s is None else np.argsort(-s, kind="stable")
            for k in KS:
                share = len(want & set(order[:k].tolist())) / len(want)
                hits[(case.category, mode, k)].append(share)
                hits[("all", mode, k)].append(share)
        # Which tools the name prior treats as asked for: within RELEVANT_LOGITS of the best at the default
        # weight (`ToolIndex.relevance`), by how the request is parted into asks.
        # And whether the question needs no more different tools than it has asks (past that, a new tool's name
        # is lowered by BEYOND_ASKS_LOGITS).
        top5 = picked[:5]
        for split, rel, n_asks in (
                ("request whole", hybrid - hybrid.max(), 1),
                ("every \"and\" an ask", index.relevance(query, hybrid, strict=False), len(asks(query))),
                ("asks (shipped)", index.relevance(query, hybrid), len(asks(query, strict=True)))):
            near = DEFAULT_PRIOR_WEIGHT * rel > -RELEVANT_LOGITS
            asked[(case.category, split)].append((statistics.mean(bool(near[i]) for i in want),
                                                  sum(bool(near[i]) for i in top5 if i not in want),
                                                  len(want) <= max(1, n_asks)))
    rows = []
    for cat in (*CATEGORIES, "all"):
        for mode in MODES:
            if (cat, mode, 1) not in hits:
                continue
            row = {"category": cat, "mode": mode, "questions": len(hits[(cat, mode, 1)])}
            row.update({f"recall@{k}": round(statistics.mean(hits[(cat, mode, k)]), 3) for k in KS})
            rows.append(row)
    relevant = [{"category": cat, "split": split, "questions": len(v),
                 "ground_truth_asked": round(statistics.mean(g for g, _, _ in v), 3),
                 "others_asked": round(statistics.mean(o for _, o, _ in v), 3),
                 "within_asks": round(statistics.mean(w for _, _, w in v), 3)} for (cat, split), v in asked.items()]
    return {"rows": rows, "relevance": relevant, "search_ms_p50": round(statistics.median(search_ms), 2)}


def is_twin(case, calls) -> bool:
    """One call, to another tool than the one ground truth, whose arguments the ground truth accepts under its
    own name: a functional twin the library holds (`gcd(a=12, b=18)` for `math.gcd(a=12, b=18)`). BFCL scores
    it wrong, since only the question's own function is right; no ranking can tell which twin a question was
    written for."""
    want = ground_truth_names(case)
    if not calls or len(calls) != 1 or len(want) != 1 or calls[0][0] == want[0]:
        return False
    return check_calls([(want[0], calls[0][1])], case.functions, case.ground_truth, case.category).ok


def setup_label(k: int, weight: float) -> str:
    return f"retrieve={k}" + (f" + prior {weight:g}" if weight else "")


def end_to_end(libs: Libraries, cases, model, tok, ks=(3, 5), weights=(0.0,),
               max_new_tokens: int = 128) -> list[dict]:
    """Each case with its own functions (oracle), then with retrieve=k over the library for each k and each
    name-prior weight (0: the model's choice among the offered tools alone)."""
    from constrained_fc import generate
    from constrained_fc.errors import ContextLengthError
    records = []
    for case in tqdm(cases, desc="end to end"):
        index = libs.for_case(case)
        setups = [("oracle", case.functions, None, None)] + [(setup_label(k, w), index, k, w)
                                                            for k in ks for w in weights]
        for setup, tools, k, weight in setups:
            if weight is not None:
                index.prior_weight = weight  # one index, its embeddings and BM25 shared by every weight
            t0 = time.perf_counter()
            try:
                res = generate(model, tok, case.messages, tools, retrieve=k, max_new_tokens=max_new_tokens)
            except ContextLengthError:
                records.append({"id": case.id, "category": case.category, "setup": setup, "ok": False,
                                "reason": "context", "prompt_tokens": None, "seconds": None})
                continue
            seconds = time.perf_counter() - t0
            calls = [(c.name, c.arguments) for c in res.tool_calls] or None
            result = check_calls(calls, case.functions, case.ground_truth, case.category)
            offered = res.retrieved_tools or [f["name"] for f in case.functions]
            want = ground_truth_names(case)
            records.append({"id": case.id, "category": case.category, "setup": setup, "ok": result.ok,
                            "reason": None if result.ok else result.reason, "twin": is_twin(case, calls),
                            "retrieved_all": all(n in offered for n in want),
                            "prompt_tokens": res.stats.prompt_tokens, "seconds": round(seconds, 3),
                            "calls": [{"name": n, "arguments": a} for n, a in calls or []]})
    return records


def sealtools_end_to_end(model, tok, k: int, weights, limit: int | None, data_dir: str | None,
                         max_new_tokens: int = 128) -> tuple[list[dict], list[dict]]:
    """Seal-Tools' held-out requests for tools no training example calls or offers (the fine-tune's
    unseen-tools set), each answered with its own tools (oracle) and with retrieve=k over the whole Seal-Tools
    library (4,075 tools) for each name-prior weight; scored by `finetune.evaluate.score` (call accuracy, and
    whether the set of called names is the right one). Not BFCL: DEFAULT_PRIOR_WEIGHT was chosen here.
    `limit`: that many requests spread evenly over the file (its easy requests come first)."""
    from constrained_fc import generate
    from constrained_fc.compiler.tools import NAME_RE
    from finetune.evaluate import score, sealtools_unseen_items
    from finetune.sources import public_tool, sealtools_tools

    known = sealtools_tools(data_dir)
    # A few Seal-Tools names hold spaces, which no tool name may (normalize_tools refuses them).
    index = ToolIndex([public_tool(t) for n, t in known.items() if NAME_RE.fullmatch(n)])
    items = [it for it in sealtools_unseen_items(data_dir=data_dir)
             if all(t["function"]["name"] in index.names for t in it.tools)]
    if limit is not None and limit < len(items):
        items = [items[i * len(items) // limit] for i in range(limit)]
    records = []
    for item in tqdm(items, desc="Seal-Tools end to end"):
        want = sorted({next(iter(gt)) for gt in item.ground_truth})
        setups = [("oracle", item.tools, None)] + [(setup_label(k, w), index, w) for w in weights]
        for setup, tools, weight in setups:
            if weight is not None:
                index.prior_weight = weight
            res = generate(model, tok, item.messages, tools, retrieve=None if weight is None else k,
                           max_new_tokens=max_new_tokens)
            verdict = score(item, [(c.name, c.arguments) for c in res.tool_calls])
            records.append({"id": item.id, "setup": setup, "calls_expected": len(item.ground_truth),
                            "tools_expected": len(want),
                            "asks": max(1, len(asks(request_text(item.messages), strict=True))),
                            "ok": bool(verdict["call_ok"]),
                            "names_ok": sorted({c.name for c in res.tool_calls}) == want,
                            "offered_all": set(want) <= set(res.retrieved_tools or want)})
    rows = []
    for part, keep in (("all", lambda r: True), ("one call", lambda r: r["calls_expected"] == 1),
                       ("several calls", lambda r: r["calls_expected"] > 1)):
        for setup in dict.fromkeys(r["setup"] for r in records):
            rs = [r for r in records if r["setup"] == setup and keep(r)]
            if rs:
                rows.append({"requests": part, "setup": setup, "n": len(rs),
                             "accuracy": round(sum(r["ok"] for r in rs) / len(rs), 3),
                             "right_tools_named": round(sum(r["names_ok"] for r in rs) / len(rs), 3),
                             "ground_truth_offered": round(sum(r["offered_all"] for r in rs) / len(rs), 3)})
    return rows, records


def summarise(records: list[dict]) -> list[dict]:
    rows = []
    by = defaultdict(list)
    for r in records:
        by[(r["category"], r["setup"])].append(r)
    for (cat, setup), rs in sorted(by.items(), key=lambda kv: (CATEGORIES.index(kv[0][0]), kv[0][1] != "oracle",
                                                               kv[0][1])):
        timed = [r for r in rs if r["seconds"] is not None]
        rows.append({"category": cat, "setup": setup, "questions": len(rs),
                     "accuracy": round(sum(r["ok"] for r in rs) / len(rs), 3),
                     "accuracy_twin_ok": round(sum(r["ok"] or r.get("twin", False) for r in rs) / len(rs), 3),
                     "ground_truth_offered": round(sum(r.get("retrieved_all", True) for r in rs) / len(rs), 3),
                     "prompt_tokens_mean": round(statistics.mean(r["prompt_tokens"] for r in timed), 1),
                     "seconds_per_call": round(statistics.mean(r["seconds"] for r in timed), 3)})
    oracle = {r["category"]: r["accuracy"] for r in rows if r["setup"] == "oracle"}
    for r in rows:
        r["vs_oracle_points"] = round(100 * (r["accuracy"] - oracle[r["category"]]), 1)
    return rows


def losses(records: list[dict]) -> list[dict]:
    """Per category and retrieval setup, what became of the questions the oracle answered right: kept, or lost
    because retrieval left a ground-truth function out, the model chose another offered tool (`_twin`: a
    functional twin of the right one, `is_twin`), it added a call to another tool (often a near-twin of the
    right one), it called one tool again with other arguments, or it got the arguments wrong or made no call;
    and `gained`: the oracle wrong, retrieval right."""
    by = defaultdict(dict)
    for r in records:
        by[(r["category"], r["id"])][r["setup"]] = r
    counts = defaultdict(lambda: defaultdict(int))
    for (cat, _), setups in by.items():
        oracle = setups.get("oracle")
        if oracle is None:
            continue
        for setup, r in setups.items():
            if setup == "oracle":
                continue
            c = counts[(cat, setup)]
            if not oracle["ok"]:
                c["gained"] += r["ok"]
                continue
            c["oracle_right"] += 1
            tag = (r["reason"] or "").split(":")[0]
            if r["ok"]:
                c["kept"] += 1
            elif not r.get("retrieved_all", True) or tag == "context":
                c["lost_not_offered"] += 1
            elif tag == "wrong_func_name":
                c["lost_other_tool"] += 1
                c["lost_other_tool_twin"] += bool(r.get("twin"))
            elif tag == "wrong_count" and len(r.get("calls") or []) > 1:
                c["lost_repeat" if len({x["name"] for x in r["calls"]}) == 1 else "lost_extra_call"] += 1
            else:
                c["lost_other"] += 1
    cols = ("oracle_right", "kept", "lost_not_offered", "lost_other_tool", "lost_other_tool_twin", "lost_extra_call",
            "lost_repeat", "lost_other", "gained")
    return [{"category": cat, "setup": setup, **{k: c[k] for k in cols}}
            for (cat, setup), c in sorted(counts.items(), key=lambda kv: (CATEGORIES.index(kv[0][0]), kv[0][1]))]


def library_tokens(tok, tools) -> int:
    from constrained_fc.chat import encode_prompt
    return len(encode_prompt(tok, [{"role": "user", "content": "x"}], tools))


def plot(out, recall_rows, e2e_rows) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in (r for r in recall_rows if r["category"] == "all"):
        mode = row["mode"]
        axes[0].plot(KS, [row[f"recall@{k}"] for k in KS], marker="o", label=mode)
    axes[0].axhline(0.95, color="grey", ls=":", lw=1)
    axes[0].set(xlabel="k", ylabel="recall@k", title="Ground-truth functions in the top k", xticks=KS)
    axes[0].legend()
    cats = [c for c in CATEGORIES if any(r["category"] == c for r in e2e_rows)]
    setups = sorted({r["setup"] for r in e2e_rows}, key=lambda s: (s != "oracle", s))
    width = 0.8 / max(1, len(setups))
    for i, setup in enumerate(setups):
        vals = [next((r["accuracy"] for r in e2e_rows if r["category"] == c and r["setup"] == setup), 0)
                for c in cats]
        axes[1].bar([j + i * width for j in range(len(cats))], vals, width, label=setup)
    axes[1].set_xticks([j + width * (len(setups) - 1) / 2 for j in range(len(cats))], cats)
    axes[1].set(ylabel="BFCL AST accuracy", title="Embedded model: oracle tools vs retrieval", ylim=(0, 1))
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "many_tools.png", dpi=120)


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0], "many_tools")
    add_model_flag(ap)
    ap.add_argument("--categories", nargs="+", default=["simple", "multiple"], choices=CATEGORIES,
                    help="categories answered end to end (recall always covers all four)")
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 5], help="retrieve=k setups end to end")
    ap.add_argument("--recall-only", action="store_true", help="skip the model")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite results.md, the tables and the plot from the results.json already in --out "
                         "(no search, no model): after a change to how a finished run is reported")
    ap.add_argument("--sealtools", action="store_true",
                    help="end to end on Seal-Tools' held-out requests over the Seal-Tools library instead of BFCL "
                         "(where the default name-prior weight was chosen); uses the first of --ks")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--diversity", type=float, default=DEFAULT_DIVERSITY,
                    help="ToolIndex(diversity=...) end to end and in the hybrid+mmr recall row (0: plain order)")
    ap.add_argument("--prior-weights", type=float, nargs="+", default=sorted({0.0, DEFAULT_PRIOR_WEIGHT}),
                    help="ToolIndex(prior_weight=...) setups end to end: how strongly the ranking steers the name "
                         "the model writes (0: the model's choice alone; default: 0 and the library's default)")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")

    if args.sealtools:
        return sealtools_main(args)
    if args.report_only:
        return report_only(args.out, args.diversity)
    cases = [c for cat in CATEGORIES for c in load_bfcl(cat, data_dir=args.data)]
    base, distinct = library(cases)
    libs = Libraries(base, args.diversity)
    rec = recall(libs, cases)
    extra = {"library": {"distinct_functions": distinct, "distinct_names": len(base),
                         "search_ms_p50": rec["search_ms_p50"], "diversity": libs.diversity},
             "relevance": rec["relevance"]}
    records = None
    if not args.recall_only:
        from constrained_fc import load_model
        model, tok = load_model(args.model)
        extra["library"]["prompt_tokens_whole_library"] = library_tokens(tok, list(base.values()))
        extra["model"] = model_label(args.model)
        chosen = [c for cat in args.categories for c in load_bfcl(cat, data_dir=args.data, limit=args.limit)]
        records = end_to_end(libs, chosen, model, tok, tuple(args.ks), tuple(args.prior_weights),
                             args.max_new_tokens)
    return report(args.out, rec["rows"], extra, records)


def report_only(out: str, diversity: float) -> int:
    path = Path(out) / "results.json"
    if not path.is_file():
        raise SystemExit(f"--report-only: no {path} (run the benchmark first)")
    payload = json.loads(path.read_text("utf-8"))
    extra = {k: payload[k] for k in ("library", "relevance", "model") if k in payload}
    extra["library"].setdefault("diversity", diversity)  # results written before it was recorded
    return report(out, [r for r in payload["rows"] if "mode" in r], extra, payload.get("records"))


def report(out: str, recall_rows: list[dict], extra: dict, records: list[dict] | None) -> int:
    """Write results.json / .md and the plot: recall rows, and the end-to-end tables from `records` (None:
    recall only)."""
    rows = {"recall": recall_rows, "end_to_end": [], "losses": []}
    if records is not None:
        rows["end_to_end"] = summarise(records)
        rows["losses"] = extra["losses"] = losses(records)
        extra["records"] = records
    lib = extra["library"]
    md = [f"# Many tools: retrieval over a {lib['distinct_names']}-tool library\n",
          f"Library: every distinct function of BFCL simple, multiple, parallel and parallel_multiple: "
          f"{lib['distinct_functions']} (name, schema) pairs under {lib['distinct_names']} names; a question sees "
          f"its own version of a shared name. Hybrid search p50: {lib['search_ms_p50']} ms per request. "
          f"Diversity (maximal marginal relevance, `hybrid+mmr` and end to end): {lib['diversity']}."]
    if "prompt_tokens_whole_library" in lib:
        md.append(f"The whole library in one prompt would be {lib['prompt_tokens_whole_library']:,} tokens "
                  "(the model reads 8,192).")
    md += ["\n## recall@k of the ground-truth functions\n",
           md_table(recall_rows, ["category", "mode", "questions", *[f"recall@{k}" for k in KS]])]
    if extra.get("relevance"):
        md += ["\n## Which tools the name prior treats as asked for\n",
               f"Within {RELEVANT_LOGITS:g} logits of the best at the default weight ({DEFAULT_PRIOR_WEIGHT:g} x "
               "`ToolIndex.relevance`): the share of a question's ground-truth functions so treated, and the number of "
               "other top-5 tools so treated per question (a second call to one of them is not pushed away). By how "
               "the request is parted into asks: not at all, at every \"and\", or as shipped (a plain \"and\" "
               f"parts two asks only between clauses of {MIN_STRICT_AND_WORDS} words or more). simple and multiple "
               "questions ask for one function; parallel_multiple questions for several. Last column: the share of "
               "questions whose ground truth calls no more different functions than the request has asks; past that "
               f"many, a new tool's name is lowered by {BEYOND_ASKS_LOGITS:g} more logits (`runtime.session`).\n",
               md_table(extra["relevance"], ["category", "split", "questions", "ground_truth_asked", "others_asked",
                                           "within_asks"],
                        ["category", "asks", "questions", "ground truth treated as asked for",
                         "other top-5 tools treated as asked for", "tools needed <= asks"])]
    if rows["end_to_end"]:
        md += [f"\n## End to end ({extra['model']}, tool_choice=auto, constrained)\n",
               md_table(rows["end_to_end"], ["category", "setup", "questions", "accuracy", "vs_oracle_points",
                                             "accuracy_twin_ok", "ground_truth_offered", "prompt_tokens_mean",
                                             "seconds_per_call"],
                        ["category", "tools offered", "questions", "AST accuracy", "vs oracle (points)",
                         "twin counted right", "ground truth offered", "prompt tokens", "s / call"]),
               "\nTwin counted right: the accuracy if a call to a functional twin of the ground truth counted: one "
               "call, to another library tool, whose arguments BFCL's checker accepts under the ground truth's "
               "name (`gcd(num1=12, num2=18)` for `math.gcd`). The library holds many such twins, each written "
               "for its own question; the oracle never sees them."]
        md += ["\n### Where retrieval loses\n",
               "Questions the oracle answered right, and what became of each with retrieval: kept; ground truth "
               "not offered; another offered tool chosen (of them, a twin of the ground truth); an extra call to "
               "another tool; the same tool called again with other arguments; wrong arguments or no call. Gained: "
               "the oracle wrong, retrieval right.\n",
               md_table(rows["losses"], ["category", "setup", "oracle_right", "kept", "lost_not_offered",
                                         "lost_other_tool", "lost_other_tool_twin", "lost_extra_call", "lost_repeat",
                                         "lost_other", "gained"],
                        ["category", "tools offered", "oracle right", "kept", "not offered", "other tool chosen",
                         "of them twins", "extra call", "called again", "wrong arguments or no call", "gained"])]
    out = write_results(out, rows["recall"] + rows["end_to_end"], "\n".join(md) + "\n", extra)
    plot(out, recall_rows, rows["end_to_end"])
    print("\n".join(md))
    print(f"wrote {out}")
    return 0


def sealtools_main(args) -> int:
    from constrained_fc import load_model
    model, tok = load_model(args.model)
    k = args.ks[0]
    rows, records = sealtools_end_to_end(model, tok, k, args.prior_weights, args.limit, args.data,
                                         args.max_new_tokens)
    oracle = [r for r in records if r["setup"] == "oracle"]
    within = sum(r["tools_expected"] <= r["asks"] for r in oracle)
    md = [f"# Many tools: Seal-Tools held-out requests, retrieve={k} over the Seal-Tools library\n",
          f"{model_label(args.model)}, tool_choice=auto, constrained. Requests for tools no training example calls "
          "or offers; oracle = each request's own tools; `+ prior W` = the ranking steers the name "
          "(`ToolIndex(prior_weight=W)`). Accuracy: the call(s) right by BFCL's AST rules; right tools named: "
          "the set of called names is the expected one.\n",
          md_table(rows, ["requests", "setup", "n", "accuracy", "right_tools_named", "ground_truth_offered"],
                   ["requests", "tools offered", "n", "call accuracy", "right tools named", "ground truth offered"]),
          f"\nRequests that need no more different tools than they have asks (`retrieval.asks`; past that many a "
          f"new tool's name is lowered by {BEYOND_ASKS_LOGITS:g} more logits): {within} of {len(oracle)}."]
    out = write_results(args.out, rows, "\n".join(md) + "\n", {"model": model_label(args.model),
                                                                "records": records})
    print("\n".join(md))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
