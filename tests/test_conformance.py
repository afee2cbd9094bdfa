"""A fixed slice of the JSON-Schema-Test-Suite and MaskBench: a valid instance is never rejected, and an
invalid one is accepted only where the compiler relaxed a keyword. The full run is benchmarks/coverage.py."""
import json
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from constrained_fc import compile_schema

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))


def _coverage_module():
    # benchmarks/coverage.py shares its name with the coverage.py package: load it by path.
    import importlib.util
    spec = importlib.util.spec_from_file_location("cfc_coverage_bench", BENCH / "coverage.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def _root():
    from constrained_fc.eval.data import data_dir
    try:
        return data_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def _check(cases, registry=None, assert_formats=False):
    false_rejects, unexplained, compiled = [], [], 0
    for case in cases:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = compile_schema(case.schema, registry=registry, warn=False, assert_formats=assert_formats)
        except Exception:
            continue
        compiled += 1
        for data, valid in case.tests:
            try:
                ok = g.accepts(g.render(data))
            except ValueError:
                ok = False
            if valid and not ok:
                false_rejects.append((case.name, data))
            if not valid and ok and not g.relaxations:
                unexplained.append((case.name, data))
    return compiled, false_rejects, unexplained


def test_jsts_slice_has_no_false_rejects():
    cov = _coverage_module()
    root = _root()
    cases = cov.jsts_cases(root)[::4]
    compiled, false_rejects, unexplained = _check(cases, cov.remotes(root))
    assert compiled >= 0.8 * len(cases)
    assert false_rejects == []
    assert unexplained == []


def test_maskbench_slice_has_no_false_rejects():
    cov = _coverage_module()
    cases = cov.maskbench_cases(_root())[::25]
    compiled, false_rejects, unexplained = _check(cases, assert_formats=True)  # MaskBench labels assert formats
    assert compiled >= 0.95 * len(cases)
    assert false_rejects == []
    assert unexplained == []


# ------------------------------------------------------------------------------------------- property test
SCALARS = st.sampled_from([
    ({"type": "string"}, st.text(max_size=8)),
    ({"type": "string", "maxLength": 4}, st.text(max_size=4)),
    ({"type": "integer"}, st.integers(-10**12, 10**12)),
    ({"type": "integer", "minimum": -7, "maximum": 300}, st.integers(-7, 300)),
    ({"type": "number"}, st.floats(allow_nan=False, allow_infinity=False)),
    ({"type": "number", "minimum": 0}, st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
    ({"type": "boolean"}, st.booleans()),
    ({"type": "null"}, st.none()),
    ({"enum": ["a", "b", 3]}, st.sampled_from(["a", "b", 3])),
    ({"type": "string", "format": "date"}, st.dates().map(lambda d: d.isoformat())),
])


def schemas(depth=2):
    if depth == 0:
        return SCALARS

    def obj(children):
        pairs = st.lists(st.tuples(st.text("abcxyz_", min_size=1, max_size=5), children, st.booleans()),
                         max_size=4, unique_by=lambda t: t[0])

        def build(ps):
            schema = {"type": "object", "properties": {k: s for k, (s, _), _ in ps},
                      "required": [k for k, _, r in ps if r], "additionalProperties": False}
            value = st.fixed_dictionaries({k: v for k, (_, v), r in ps if r},
                                          optional={k: v for k, (_, v), r in ps if not r})
            return st.tuples(st.just(schema), st.just(value))
        return pairs.flatmap(build)

    def arr(children):
        return st.tuples(children, st.integers(0, 2), st.integers(2, 4)).map(
            lambda t: ({"type": "array", "items": t[0][0], "minItems": t[1], "maxItems": t[2]},
                       st.lists(t[0][1], min_size=t[1], max_size=t[2])))

    def anyof(children):
        return st.tuples(children, children).map(
            lambda t: ({"anyOf": [t[0][0], t[1][0]]}, st.one_of(t[0][1], t[1][1])))

    child = schemas(depth - 1)
    return st.one_of(SCALARS, obj(child), arr(child), anyof(child))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_generated_valid_instances_are_accepted(data):
    schema, values = data.draw(schemas())
    value = data.draw(values)
    g = compile_schema(schema, warn=False)
    assert g.accepts_value(value), (json.dumps(schema), value, g.lark)
