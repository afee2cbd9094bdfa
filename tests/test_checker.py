"""The shared BFCL AST checker: every rule passes a good call and fails a bad one; the lenient parser reads
each surface form and never raises; hallucinations are classified; ground-truth-built calls pass on the
real BFCL files."""
import json
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from constrained_fc.eval.checker import (CheckResult, check_calls, hallucination_kind, parse_lenient,
                                    standardize_string)
from constrained_fc.eval.data import load_bfcl
from constrained_fc.eval.data import data_dir as resolve_data_dir

AREA = {"name": "geo.area", "description": "Area of a shape.", "parameters": {"type": "dict", "properties": {
    "base": {"type": "integer", "description": "base"},
    "height": {"type": "float", "description": "height"},
    "unit": {"type": "string", "description": "unit"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "counts": {"type": "array", "items": {"type": "integer"}},
    "weights": {"type": "array", "items": {"type": "float"}},
    "coord": {"type": "tuple", "items": {"type": "float"}},
    "exact": {"type": "boolean"},
    "data": {"type": "any"},
    "opts": {"type": "dict", "properties": {"mode": {"type": "string"}, "level": {"type": "integer"}}},
    "rows": {"type": "array", "items": {"type": "dict"}},
    "extra": {"type": "string", "description": "in the schema but never in the ground truth"},
}, "required": ["base", "height"]}}
OTHER = {"name": "geo.perimeter", "description": "", "parameters": {"type": "dict", "properties": {
    "side": {"type": "integer"}}, "required": ["side"]}}

GT_AREA = {"base": [10], "height": [5.0], "unit": ["square meters", "m^2", ""], "tags": [["red", "Big Blue"], ""],
           "counts": [[1, 2], ""], "weights": [[0.5, 1.5], ""], "coord": [[1.5, 2.5], ""], "exact": [True, ""],
           "data": ["my_data", ""], "opts": [{"mode": ["Fast"], "level": [1, ""]}, ""],
           "rows": [[{"k": ["Alpha"]}, {"k": ["Beta"]}], ""]}
GT = [{"geo.area": GT_AREA}]


def check(args, gt_params=None, name="geo.area", category="simple"):
    gt = [{"geo.area": gt_params}] if gt_params is not None else GT
    return check_calls([(name, args)], [AREA, OTHER], gt, category)


def ok(args, **kw):
    res = check(args, **kw)
    assert res.ok and res.reason == "" and bool(res), res.reason


def bad(args, tag, **kw):
    res = check(args, **kw)
    assert not res.ok and not bool(res)
    assert res.tag == tag, res.reason
    assert res.reason.startswith(tag + ": ")
    return res


BASE = {"base": 10, "height": 5.0}


# -- one rule at a time ---------------------------------------------------------------------------------

def test_minimal_call_passes():
    ok(BASE)
    assert CheckResult(True).tag == ""


def test_function_name_must_match():
    ok(BASE, name="geo.area")
    bad(BASE, "wrong_func_name", name="geo_area")


def test_simple_uses_the_questions_function_not_the_ground_truth_name():
    # BFCL's simple checker names the expected function from the question (BFCL's simple_363 relies on it).
    fns = [AREA]
    gt = [{"area": {"base": [10], "height": [5.0]}}]
    assert check_calls([("geo.area", BASE)], fns, gt, "simple").ok
    assert not check_calls([("area", BASE)], fns, gt, "simple").ok


def test_required_parameters_present():
    ok({"base": 10, "height": 5.0})
    bad({"base": 10}, "missing_required")
    # required wins over a ground truth that calls it omittable (BFCL checks `required` first)
    bad({"base": 10}, "missing_required", gt_params={**GT_AREA, "height": [5.0, ""]})


def test_no_parameter_outside_schema_or_ground_truth():
    ok({**BASE, "unit": "m^2"})
    bad({**BASE, "color": "red"}, "unexpected_param")  # not in the schema
    bad({**BASE, "extra": "x"}, "unexpected_param")  # in the schema, not in the ground truth


def test_integer_type():
    ok(BASE)
    bad({**BASE, "base": "10"}, "type_error")
    bad({**BASE, "base": 10.0}, "type_error")  # a float is not accepted for an int parameter
    bad({**BASE, "base": True}, "type_error")  # bool is its own type, as in BFCL's type() == check


def test_int_accepted_for_float():
    ok({"base": 10, "height": 5})
    bad({"base": 10, "height": "5"}, "type_error")
    bad({"base": 10, "height": 6}, "wrong_value")


def test_boolean_type():
    ok({**BASE, "exact": True})
    bad({**BASE, "exact": 1}, "type_error")
    bad({**BASE, "exact": False}, "wrong_value")


def test_any_is_a_string_as_in_bfcl():
    ok({**BASE, "data": "MY data"})
    bad({**BASE, "data": 5}, "type_error")


def test_string_normalisation():
    ok({**BASE, "unit": "Square-Meters"})
    ok({**BASE, "unit": "square_meters."})
    ok({**BASE, "unit": "M ^ 2"})
    bad({**BASE, "unit": "sq meters"}, "wrong_value")
    assert standardize_string("April 1, 2024") == standardize_string("april 1 2024") == "april12024"
    assert standardize_string("it's") == 'it"s'
    assert standardize_string("a/b-c_d*e^f.g,h") == "abcdefgh"


def test_quote_normalisation():
    gt = {**GT_AREA, "unit": ['say "hi"']}
    ok({**BASE, "unit": "say 'hi'"}, gt_params=gt)
    bad({**BASE, "unit": "say hi"}, "wrong_value", gt_params=gt)


def test_lists_match_in_order_with_normalised_strings():
    ok({**BASE, "tags": ["red", "big blue"]})
    ok({**BASE, "tags": ["RED", "big-blue"]})
    bad({**BASE, "tags": ["big blue", "red"]}, "wrong_value")
    bad({**BASE, "tags": ["red"]}, "wrong_value")


def test_list_item_types_are_checked_one_level_deep():
    gt = {**GT_AREA, "counts": [[1, 2]], "weights": [[0.5, 2.0]]}
    ok({**BASE, "counts": [1, 2], "weights": [0.5, 2.0]}, gt_params=gt)
    bad({**BASE, "counts": [1, "2"], "weights": [0.5, 2.0]}, "type_error", gt_params=gt)
    # BFCL's item check has no int -> float allowance
    bad({**BASE, "counts": [1, 2], "weights": [0.5, 2]}, "type_error", gt_params=gt)
    # As in BFCL, an omittable list ("" among its values) skips the item check; the value check still fails.
    bad({**BASE, "counts": [1, "2"]}, "wrong_value")


def test_empty_list_for_an_omittable_list_passes_as_in_bfcl():
    ok({**BASE, "tags": []})
    bad({**BASE, "tags": []}, "wrong_value", gt_params={**GT_AREA, "tags": [["red"]]})


def test_tuple_compared_as_list():
    ok({**BASE, "coord": [1.5, 2.5]})
    ok({**BASE, "coord": (1.5, 2.5)})
    bad({**BASE, "coord": [2.5, 1.5]}, "wrong_value")
    bad({**BASE, "coord": "1.5, 2.5"}, "type_error")


def test_dict_parameter():
    ok({**BASE, "opts": {"mode": "fast", "level": 1}})
    ok({**BASE, "opts": {"mode": "FAST"}})  # level may be left out ("" among its values)
    bad({**BASE, "opts": {"mode": "slow"}}, "wrong_value")
    bad({**BASE, "opts": {"level": 1}}, "wrong_value")  # mode may not be left out
    bad({**BASE, "opts": {"mode": "fast", "speed": 3}}, "wrong_value")  # a key the ground truth lacks
    bad({**BASE, "opts": ["fast"]}, "type_error")


def test_nested_dicts_compared_recursively():
    gt = {**GT_AREA, "opts": [{"mode": [{"name": ["Turbo Mode"], "boost": [2, ""]}], "level": [1]}]}
    ok({**BASE, "opts": {"mode": {"name": "turbo-mode"}, "level": 1}}, gt_params=gt)
    ok({**BASE, "opts": {"mode": {"name": "Turbo Mode", "boost": 2}, "level": 1}}, gt_params=gt)
    bad({**BASE, "opts": {"mode": {"name": "turbo", "boost": 2}, "level": 1}}, "wrong_value", gt_params=gt)
    bad({**BASE, "opts": {"mode": {"boost": 2}, "level": 1}}, "wrong_value", gt_params=gt)
    # a literal dict as an acceptable value also works
    gt2 = {**GT_AREA, "opts": [{"mode": [{"name": "Turbo Mode"}], "level": [1]}]}
    ok({**BASE, "opts": {"mode": {"name": "turbo mode"}, "level": 1}}, gt_params=gt2)
    bad({**BASE, "opts": {"mode": {"name": "turbo"}, "level": 1}}, "wrong_value", gt_params=gt2)


def test_list_of_dicts():
    ok({**BASE, "rows": [{"k": "alpha"}, {"k": "BETA"}]})
    bad({**BASE, "rows": [{"k": "beta"}, {"k": "alpha"}]}, "wrong_value")
    bad({**BASE, "rows": [{"k": "alpha"}]}, "wrong_value")
    bad({**BASE, "rows": [{"k": "alpha"}, 3]}, "wrong_value")
    bad({**BASE, "rows": [{"k": "alpha"}, 3]}, "type_error", gt_params={**GT_AREA, "rows": [[{"k": ["Alpha"]}]]})


def test_absent_parameter_only_where_empty_string_allowed():
    ok(BASE)  # every other ground-truth param lists ""
    gt = {**GT_AREA, "unit": ["square meters"]}
    ok({**BASE, "unit": "square meters"}, gt_params=gt)
    bad(BASE, "missing_param", gt_params=gt)


def test_variable_ground_truth_accepts_its_own_type():
    # BFCL writes a variable as a string even for non-string params; a value of the ground truth's type is
    # then compared verbatim.
    gt = {**GT_AREA, "tags": ["data['sales']"]}
    ok({**BASE, "tags": "data['sales']"}, gt_params=gt)
    bad({**BASE, "tags": "data['other']"}, "wrong_value", gt_params=gt)
    bad({**BASE, "tags": ["sales"]}, "wrong_value", gt_params=gt)


def test_values_must_be_acceptable():
    res = bad({"base": 3, "height": 5.0}, "wrong_value")
    assert "param 'base'" in res.reason and "got 3" in res.reason and "[10]" in res.reason


def test_bad_arguments_and_json_string_arguments():
    assert check_calls([("geo.area", json.dumps(BASE))], [AREA], GT, "simple").ok
    assert check_calls([("geo.area", "{not json")], [AREA], GT, "simple").tag == "bad_arguments"
    assert check_calls([("geo.area", [1])], [AREA], GT, "simple").tag == "bad_arguments"


def test_call_shapes_and_openai_tools():
    openai_tools = [{"type": "function", "function": AREA}]
    for calls in ([("geo.area", BASE)], [SimpleNamespace(name="geo.area", arguments=BASE)],
                  [{"name": "geo.area", "arguments": json.dumps(BASE)}],
                  [{"type": "function", "function": {"name": "geo.area", "arguments": BASE}}]):
        assert check_calls(calls, openai_tools, GT, "simple").ok
    schema = {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number"},
                                                                           "o": {"type": "object"}}}}
    gt = [{"f": {"x": [1.5], "o": [{"a": ["B"]}]}}]
    assert check_calls([("f", {"x": 1.5, "o": {"a": "b"}})], [schema], gt, "simple").ok
    assert check_calls([("f", {"x": "1.5", "o": {"a": "b"}})], [schema], gt, "simple").tag == "type_error"


# -- call counts and categories -------------------------------------------------------------------------

def test_simple_needs_exactly_one_call():
    assert check_calls([("geo.area", BASE)], [AREA], GT, "simple").ok
    assert check_calls([("geo.area", BASE)] * 2, [AREA], GT, "simple").tag == "wrong_count"
    assert check_calls([], [AREA], GT, "simple").tag == "wrong_count"
    assert check_calls(None, [AREA], GT, "simple").tag == "wrong_count"


def test_multiple_picks_the_ground_truth_function():
    gt = [{"geo.perimeter": {"side": [4]}}]
    assert check_calls([("geo.perimeter", {"side": 4})], [AREA, OTHER], gt, "multiple").ok
    assert check_calls([("geo.area", BASE)], [AREA, OTHER], gt, "multiple").tag == "wrong_func_name"
    assert check_calls([("geo.perimeter", {"side": 4})], [AREA], gt, "multiple").tag == "bad_ground_truth"


PAR_GT = [{"geo.perimeter": {"side": [4]}}, {"geo.perimeter": {"side": [5]}}, {"geo.area": {"base": [1], "height": [2.0]}}]


def test_parallel_is_order_independent():
    calls = [("geo.area", {"base": 1, "height": 2}), ("geo.perimeter", {"side": 5}), ("geo.perimeter", {"side": 4})]
    for cat in ("parallel", "parallel_multiple"):
        assert check_calls(calls, [AREA, OTHER], PAR_GT, cat).ok
        assert check_calls(calls[::-1], [AREA, OTHER], PAR_GT, cat).ok


def test_parallel_needs_the_same_number_of_calls():
    calls = [("geo.perimeter", {"side": 4}), ("geo.perimeter", {"side": 5})]
    assert check_calls(calls, [AREA, OTHER], PAR_GT, "parallel").tag == "wrong_count"
    dup = calls + [("geo.area", {"base": 1, "height": 2.0}), ("geo.perimeter", {"side": 4})]
    assert check_calls(dup, [AREA, OTHER], PAR_GT, "parallel").tag == "wrong_count"


def test_parallel_fails_when_a_call_is_wrong_or_duplicated():
    calls = [("geo.area", {"base": 1, "height": 2}), ("geo.perimeter", {"side": 4}), ("geo.perimeter", {"side": 4})]
    res = check_calls(calls, [AREA, OTHER], PAR_GT, "parallel")
    assert res.tag == "no_match" and "'geo.perimeter'" in res.reason


def test_parallel_uses_a_full_matching_not_greedy():
    # Greedy pairing (BFCL's) gives call 0 to entry 0 and then finds nothing for entry 1.
    gt = [{"geo.perimeter": {"side": [1, 2]}}, {"geo.perimeter": {"side": [1]}}]
    calls = [("geo.perimeter", {"side": 1}), ("geo.perimeter", {"side": 2})]
    assert check_calls(calls, [OTHER], gt, "parallel").ok
    assert not check_calls([("geo.perimeter", {"side": 2})] * 2, [OTHER], gt, "parallel").ok


def test_irrelevance_passes_only_without_calls():
    assert check_calls([], [AREA], [], "irrelevance").ok
    assert check_calls(None, [AREA], [], "irrelevance").ok
    res = check_calls([("geo.area", BASE)], [AREA], [], "irrelevance")
    assert res.tag == "irrelevance_call"


def test_unknown_category():
    with pytest.raises(ValueError, match="unknown BFCL category"):
        check_calls([], [AREA], GT, "java")


# -- parse_lenient --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('{"name": "f", "arguments": {"a": 1}}', [("f", {"a": 1})]),
    ('[{"name": "f", "parameters": {"a": 1}}, {"name": "g.h", "arguments": {}}]', [("f", {"a": 1}), ("g.h", {})]),
    ('{"name": "f", "arguments": "{\\"a\\": [1, 2]}"}', [("f", {"a": [1, 2]})]),
    ('[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}]', [("f", {"a": 1})]),
    ('[TOOL_CALLS]f[ARGS]{"a": 1}[TOOL_CALLS]g[ARGS]{"b": "x"}', [("f", {"a": 1}), ("g", {"b": "x"})]),
    ('Here you go:\n```json\n{"name": "f", "arguments": {"a": 1}}\n```\nDone.', [("f", {"a": 1})]),
    ('```python\nf(a=1)\n```', [("f", {"a": 1})]),
    ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n<tool_call>\n{"name": "g", "arguments": '
     '{"b": 2}}\n</tool_call>', [("f", {"a": 1}), ("g", {"b": 2})]),
    ('<tool_call>{"name": "f"}', [("f", {})]),
    ('<function=f>{"a": 1}</function>', [("f", {"a": 1})]),
    ('Sure! I will call {"name": "f", "arguments": {"a": "x"}} for you.', [("f", {"a": "x"})]),
    ('{"tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\\"a\\": 1}"}}]}',
     [("f", {"a": 1})]),
    ("{'name': 'f', 'arguments': {'a': True}}", [("f", {"a": True})]),
    ('[f(a=1), g(b="x")]', [("f", {"a": 1}), ("g", {"b": "x"})]),
    ("f(a=1)", [("f", {"a": 1})]),
    ("math.factorial(number=5)", [("math.factorial", {"number": 5})]),
    ("f(a=1)\ng(b=[1, (2, 3)], c={'k': None})", [("f", {"a": 1}), ("g", {"b": [1, [2, 3]], "c": {"k": None}})]),
    ("I'd call spotify.play(artist='Taylor Swift', duration=20) now.",
     [("spotify.play", {"artist": "Taylor Swift", "duration": 20})]),
    ("f(flag=true, x=-1.5, y=data['sales'])", [("f", {"flag": True, "x": -1.5, "y": "data['sales']"})]),
    ('say f(a=")", b=2)', [("f", {"a": ")", "b": 2})]),
])
def test_parse_lenient_forms(text, expected):
    assert parse_lenient(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "The answer is 42.", "sqrt(2) is irrational", "[]", "{}", "[1, 2]",
                                  '{"name": "John", "age": 3}', '{"name": "x y", "arguments": {}}',
                                  '{"name": "f", "arguments": "not json"}', "```\nplain code\n```", "(", "f(",
                                  "<tool_call></tool_call>", "[TOOL_CALLS]"])
def test_parse_lenient_nothing_call_like(text):
    assert parse_lenient(text) is None


def _valid_result(r):
    assert r is None or (isinstance(r, list) and r), r
    for name, args in r or []:
        assert isinstance(name, str) and name and isinstance(args, dict)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_parse_lenient_never_raises_on_garbage(text):
    _valid_result(parse_lenient(text))


PIECES = ['{', '}', '[', ']', '(', ')', '"', "'", ':', ',', '=', '"name"', '"arguments"', '"parameters"', 'f', 'g.h',
          'a=1', '[TOOL_CALLS]', '[ARGS]', '<tool_call>', '</tool_call>', '```json\n', '```', '\\', '1e999', 'true',
          'None', ' ', '\n', 'x' * 5, '{"name": "f", "arguments": ', '"{\\"a\\": 1}"', '**', 'lambda: 0', '\x00']


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_parse_lenient_never_raises_on_call_like_noise(text):
    _valid_result(parse_lenient(text))


def test_parse_lenient_non_string_and_degenerate_input():
    assert parse_lenient(None) is None  # type: ignore[arg-type]
    assert parse_lenient(b"f(a=1)") is None  # type: ignore[arg-type]
    assert parse_lenient("[" * 5000) is None
    assert parse_lenient("f(" * 5000) is None
    assert parse_lenient("f(a=" * 50 + "1" + ")" * 50)[0][0] == "f"
    deep = parse_lenient("f(a=" * 3000 + "1" + ")" * 3000)  # beyond Python's parser: inner calls or None
    assert deep is None or deep[0][0] == "f"


# -- hallucination_kind ---------------------------------------------------------------------------------

def test_hallucination_kind():
    tools = [AREA, OTHER]
    assert hallucination_kind(("geo.area", BASE), tools) is None
    assert hallucination_kind(("geo.area", {"base": 10, "height": 5}), tools) is None  # float accepts int
    assert hallucination_kind(("geo.volume", BASE), tools) == "unknown_function"
    assert hallucination_kind(("geo.area", {"base": 10}), tools) == "schema_violation"  # missing required
    assert hallucination_kind(("geo.area", {"base": "10", "height": 5.0}), tools) == "schema_violation"
    assert hallucination_kind(("geo.area", {**BASE, "color": "red"}), tools) == "schema_violation"  # invented
    assert hallucination_kind(("geo.area", "not an object"), tools) == "schema_violation"
    assert hallucination_kind({"name": "geo.perimeter", "arguments": '{"side": 3}'}, tools) is None
    assert hallucination_kind(SimpleNamespace(name="geo.perimeter", arguments={"side": 3.5}), tools) \
        == "schema_violation"
    openai = [{"type": "function", "function": {"name": "w", "parameters": {
        "type": "object", "properties": {"u": {"type": "string", "enum": ["c", "f"]}}}}}]
    assert hallucination_kind(("w", {"u": "c"}), openai) is None
    assert hallucination_kind(("w", {"u": "k"}), openai) == "schema_violation"
    assert hallucination_kind(("w", {"u": "c"}), json.dumps(openai)) is None


# -- ground-truth-built calls on the real data ----------------------------------------------------------

def _data_or_skip():
    try:
        return resolve_data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"BFCL data not available: {e}")


def _calls_from_ground_truth(case):
    """The recipe: first acceptable value of each param, leaving out params whose first value is ""."""
    return [(name, {p: vals[0] for p, vals in params.items() if vals[0] != ""})
            for entry in case.ground_truth for name, params in entry.items()]


def _mutated(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1000003
    if isinstance(value, float):
        return value + 1000.5
    if isinstance(value, str):
        return value + " zz mutated"
    if isinstance(value, list):
        return value + value[:1] if value else ["zz mutated"]
    if isinstance(value, dict):
        return {**value, "zz_invented": 1}
    return "zz mutated"


def _check_mutation_fails(case, calls):
    """Some one-value mutation of the first call must fail; a call without arguments gets a wrong name."""
    name, args = calls[0]
    if not args:
        wrong = [(name + "_zz", args)] + calls[1:]
        assert not check_calls(wrong, case.functions, case.ground_truth, case.category).ok, case.id
        return
    for param, value in args.items():
        wrong = [(name, {**args, param: _mutated(value)})] + calls[1:]
        if not check_calls(wrong, case.functions, case.ground_truth, case.category).ok:
            return
    pytest.fail(f"{case.id}: no single-value mutation of {calls[0]} was rejected")


# Ground-truth entries the plain recipe cannot turn into a passing call, each for a reason in the data
# (BFCL's own checker rejects these recipe calls too):
KNOWN_RECIPE_FAILURES = {
    "simple_200": "required param 'fuel_efficiency' lists \"\" first, so the recipe leaves it out",
    "simple_363": "ground truth names 'find_closest'; the function is 'restaurant_search.find_closest'",
    "parallel_multiple_26": "ground truth has param 'type', which the schema does not declare",
}


@pytest.mark.parametrize("category", ["simple", "multiple", "parallel", "parallel_multiple"])
def test_ground_truth_calls_pass_and_mutations_fail(category):
    root = _data_or_skip()
    cases = load_bfcl(category, data_dir=root, limit=50)
    assert len(cases) == 50
    for case in cases:
        calls = _calls_from_ground_truth(case)
        res = check_calls(calls, case.functions, case.ground_truth, category)
        if case.id in KNOWN_RECIPE_FAILURES:
            assert not res.ok, case.id
            calls = _fixed_calls(case)
            res = check_calls(calls, case.functions, case.ground_truth, category)
        assert res.ok, f"{case.id}: {res.reason}"
        _check_mutation_fails(case, calls)


def _fixed_calls(case):
    """The recipe made aware of the three data defects: it keeps required params, uses the question's own
    function name in the simple category and leaves out omittable params the schema does not declare."""
    out = []
    fns = {f["name"]: f for f in case.functions}
    for entry in case.ground_truth:
        for name, params in entry.items():
            if case.category == "simple":
                name = case.functions[0]["name"]
            schema = fns[name]["parameters"]
            args = {}
            for p, vals in params.items():
                if p not in schema["properties"] and "" in vals:
                    continue
                firsts = [v for v in vals if v != ""]
                if vals[0] != "" or (p in schema.get("required", []) and firsts):
                    args[p] = firsts[0]
            out.append((name, args))
    return out


def test_ground_truth_calls_over_the_full_files():
    root = _data_or_skip()
    for category in ("simple", "multiple", "parallel", "parallel_multiple"):
        for case in load_bfcl(category, data_dir=root):
            plain = check_calls(_calls_from_ground_truth(case), case.functions, case.ground_truth, category)
            assert plain.ok == (case.id not in KNOWN_RECIPE_FAILURES), f"{case.id}: {plain.reason}"
            fixed = check_calls(_fixed_calls(case), case.functions, case.ground_truth, category)
            assert fixed.ok, f"{case.id}: {fixed.reason}"
