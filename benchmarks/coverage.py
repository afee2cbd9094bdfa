"""Schema coverage: the compiler against the official JSON-Schema-Test-Suite (draft 2020-12) and the
JSONSchemaBench/MaskBench subset, side by side with llguidance's own `%json` compiler, in one run.

Per schema: does it compile. Per instance: is its canonical serialisation accepted, checked token by token
through llguidance (on the embedded model's tokenizer) and by `Grammar.accepts` (llguidance over bytes). Bars (issue: compiler): zero false
rejects; false accepts only where the relaxation policy says so; at least as many MaskBench schemas compiled
as llguidance's `%json`.

    python benchmarks/coverage.py [--limit N] [--out results/coverage] [--data ../shared/data]
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from common import md_table, parser, write_results

import referencing
from llguidance import LLMatcher
from referencing.jsonschema import DRAFT202012
from tqdm import tqdm

from constrained_fc import compile_schema
from constrained_fc.eval.data import data_dir as resolve_data_dir

REMOTE_BASE = "http://localhost:1234/"


@dataclass
class Case:
    suite: str
    name: str
    schema: object
    tests: list  # [(data, valid)]


def jsts_cases(root: Path, folder: str = "draft2020-12", suite: str = "JSON-Schema-Test-Suite",
               declare: str | None = None) -> list[Case]:
    """One folder of the suite. `declare`: the `$schema` to write into each schema that has none (the older
    drafts' folders rely on the folder to say which draft; the compiler reads it from `$schema`)."""
    cases = []
    for f in sorted((root / "jsts" / folder).glob("*.json")):
        for i, group in enumerate(json.loads(f.read_text("utf-8"))):
            schema = group["schema"]
            if declare and isinstance(schema, dict) and "$schema" not in schema:
                schema = {"$schema": declare, **schema}
            cases.append(Case(suite, f"{f.stem}#{i} {group['description']}", schema,
                              [(t["data"], t["valid"]) for t in group["tests"]]))
    return cases


def _draft(n: int):
    return (f"JSTS draft-0{n}",
            lambda root: jsts_cases(root, f"draft{n}", f"JSTS draft-0{n}", f"http://json-schema.org/draft-0{n}/schema#"),
            False)


# Which suites assert `format`: the main suite treats it as an annotation (2020-12 default); the optional
# format tests and MaskBench's labels assert it.
SUITES = [
    ("JSON-Schema-Test-Suite", lambda root: jsts_cases(root), False),
    ("JSTS optional/format", lambda root: jsts_cases(root, "draft2020-12/optional/format", "JSTS optional/format"),
     True),
    ("MaskBench", lambda root: maskbench_cases(root), True),
    _draft(7), _draft(6), _draft(4),
]


def maskbench_cases(root: Path) -> list[Case]:
    cases = []
    for f in sorted((root / "maskbench").glob("*.json")):
        doc = json.loads(f.read_text("utf-8"))
        cases.append(Case("MaskBench", f.stem, doc["schema"], [(t["data"], t["valid"]) for t in doc["tests"]]))
    return cases


def remotes(root: Path) -> referencing.Registry:
    reg = referencing.Registry()
    base = root / "jsts" / "remotes"
    for f in sorted(base.rglob("*.json")):
        uri = REMOTE_BASE + f.relative_to(base).as_posix()
        reg = reg.with_resource(uri, referencing.Resource.from_contents(
            json.loads(f.read_text("utf-8")), default_specification=DRAFT202012))
    return reg


@dataclass
class Tally:
    schemas: int = 0
    compiled: int = 0
    valid: int = 0
    valid_accepted: int = 0
    invalid: int = 0
    invalid_rejected: int = 0
    false_accepts: int = 0
    false_rejects: int = 0
    unexplained_false_accepts: int = 0  # false accepts in schemas with no relaxation: policy violations
    engine_disagreements: int = 0  # Grammar.accepts and the token-by-token walk disagree on the same text
    compile_ms: float = 0.0
    examples: list = field(default_factory=list)

    def add(self, valid: bool, accepted: bool, relaxed: bool, where: str):
        if valid:
            self.valid += 1
            self.valid_accepted += accepted
            if not accepted:
                self.false_rejects += 1
                if len(self.examples) < 20:
                    self.examples.append(f"false reject: {where}")
        else:
            self.invalid += 1
            self.invalid_rejected += not accepted
            if accepted:
                self.false_accepts += 1
                if not relaxed:
                    self.unexplained_false_accepts += 1
                    if len(self.examples) < 20:
                        self.examples.append(f"unexplained false accept: {where}")


def llg_accepts(pristine: LLMatcher, lltok, text: str) -> bool:
    # A matcher that consumed a bad token stays in its error state even after reset(): use a fresh copy.
    matcher = pristine.deep_copy()
    for t in lltok.tokenize_str(text):
        if not matcher.consume_token(t):
            return False
    return matcher.is_accepting()


def run_ours(cases, lltok, registry, assert_formats) -> Tally:
    tally = Tally()
    for case in tqdm(cases, desc=f"constrained_fc {cases[0].suite if cases else ''}", leave=False):
        tally.schemas += 1
        t0 = time.perf_counter()
        g = _quiet_compile(case.schema, registry, assert_formats)
        if g is None:
            continue
        m = LLMatcher(lltok, g.lark, log_level=0)
        if m.is_error():
            continue
        tally.compile_ms += 1e3 * (time.perf_counter() - t0)
        tally.compiled += 1
        relaxed = bool(g.relaxations)
        for data, valid in case.tests:
            try:
                text = g.render(data)
            except ValueError:
                tally.add(valid, False, relaxed, f"{case.name}: {json.dumps(data)[:80]} (render)")
                continue
            by_bytes = g.accepts(text)
            by_tokens = llg_accepts(m, lltok, text)
            tally.engine_disagreements += by_bytes != by_tokens
            tally.add(valid, by_bytes and by_tokens, relaxed, f"{case.name}: {text[:80]}")
    return tally


def _quiet_compile(schema, registry=None, assert_formats=False):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return compile_schema(schema, registry=registry, warn=False, assert_formats=assert_formats)
    except Exception:
        return None


def run_llg_json(cases, lltok, assert_formats, lenient=False) -> Tally:
    tally = Tally()
    opts = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False, "lenient": lenient}
    for case in tqdm(cases, desc=f"llguidance %json {cases[0].suite if cases else ''}", leave=False):
        tally.schemas += 1
        t0 = time.perf_counter()
        try:
            grammar = LLMatcher.grammar_from_json_schema(case.schema, defaults=opts)
            m = LLMatcher(lltok, grammar, log_level=0)
            if m.is_error():
                continue
        except Exception:
            continue
        tally.compile_ms += 1e3 * (time.perf_counter() - t0)
        tally.compiled += 1
        ours = _quiet_compile(case.schema, None, assert_formats)
        for data, valid in case.tests:
            # The same text as ours where we can render it (keys in schema order), so key order is no factor.
            try:
                text = ours.render(data) if ours is not None else json.dumps(data, ensure_ascii=False)
            except ValueError:
                text = json.dumps(data, ensure_ascii=False)
            tally.add(valid, llg_accepts(m, lltok, text), True, f"{case.name}: {text[:80]}")
    return tally


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0], "coverage").parse_args(argv)
    root = resolve_data_dir(args.data)
    from constrained_fc.runtime.matcher import ll_tokenizer
    from constrained_fc.model import load_model
    _, tokenizer = load_model()
    lltok = ll_tokenizer(tokenizer)
    registry = remotes(root)
    rows, details = [], {}
    for suite, load, assert_formats in SUITES:
        cases = load(root)
        if args.limit:
            cases = cases[:args.limit]
        for engine, tally in (("constrained_fc", run_ours(cases, lltok, registry, assert_formats)),
                              ("llguidance %json", run_llg_json(cases, lltok, assert_formats)),
                              ("llguidance %json lenient", run_llg_json(cases, lltok, assert_formats, True))):
            row = {"suite": suite, "engine": engine, **{k: v for k, v in tally.__dict__.items() if k != "examples"}}
            row["compile_ms"] = round(tally.compile_ms / max(tally.compiled, 1), 2)
            rows.append(row)
            details[f"{suite} / {engine}"] = tally.examples
            print(f"{suite:24} {engine:18} compiled {tally.compiled}/{tally.schemas}  valid accepted "
                  f"{tally.valid_accepted}/{tally.valid}  invalid rejected {tally.invalid_rejected}/{tally.invalid}"
                  f"  false accepts {tally.false_accepts} (unexplained {tally.unexplained_false_accepts})"
                  f"  false rejects {tally.false_rejects}")
    cols = ["suite", "engine", "schemas", "compiled", "valid_accepted", "valid", "invalid_rejected", "invalid",
            "false_accepts", "unexplained_false_accepts", "false_rejects", "engine_disagreements", "compile_ms"]
    md = "# Schema coverage\n\n" + md_table(rows, cols) + (
        "\n\n`false_accepts` by constrained_fc happen only where lenient mode relaxed a keyword "
        "(`unexplained_false_accepts` counts the others); the `jsonschema` check on parsed calls catches them. "
        "`compile_ms` is per compiled schema, grammar text plus llguidance matcher.\n")
    out = write_results(args.out, rows, md, {"examples": details})
    _plot(rows, out / "coverage.png")
    print(f"wrote {out}")
    bad = [r for r in rows if r["engine"] == "constrained_fc" and r["false_rejects"]]
    return 1 if bad else 0


def _plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(SUITES), figsize=(5 * len(SUITES), 4))
    for ax, (suite, _, _) in zip(axes, SUITES):
        rs = [r for r in rows if r["suite"] == suite]
        metrics = ["compiled", "valid_accepted", "invalid_rejected"]
        w = 0.8 / max(len(rs), 1)
        for i, r in enumerate(rs):
            denom = {"compiled": r["schemas"], "valid_accepted": r["valid"], "invalid_rejected": r["invalid"]}
            vals = [100 * r[m] / max(denom[m], 1) for m in metrics]
            ax.bar([x + w * i for x in range(3)], vals, width=w, label=r["engine"])
        ax.set_xticks([x + 0.4 - w / 2 for x in range(3)], ["schemas compiled", "valid accepted",
                                                              "invalid rejected"])
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(suite)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
