"""The compiler: tools in any dialect -> grammar text whose language is exactly the valid calls."""
import json
import warnings

import pytest
from llguidance import LLMatcher

from constrained_fc import (GrammarMismatchError, RelaxedSchemaWarning, ToolCall, ToolSchemaError,
                            UnsupportedKeywordError, compile_schema, compile_tools, normalize_tools)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["location"]}}}
FACTORIAL = {"name": "math.factorial", "description": "n!", "parameters": {
    "type": "dict", "properties": {"n": {"type": "integer", "description": "n"},
                                   "mod": {"type": "float", "optional": True}},
    "required": ["n"]}}
EMAIL = {"name": "send_email", "parameters": {"type": "object", "properties": {
    "to": {"type": "array", "items": {"type": "string", "format": "email"}, "minItems": 1, "maxItems": 3},
    "subject": {"type": "string", "maxLength": 20},
    "meta": {"type": "object", "properties": {"priority": {"type": "integer", "minimum": 0, "maximum": 3},
                                              "tags": {"type": "array", "items": {"type": "string"}}},
             "required": ["priority"]}},
    "required": ["to", "subject"]}}
TOOLS = [WEATHER, FACTORIAL, EMAIL]


def llg_ok(text: str) -> bool:
    is_err, msgs = LLMatcher.validate_grammar_with_warnings(LLMatcher.grammar_from_lark(text))
    return not is_err


# ------------------------------------------------------------------------------------------- normalisation
def test_three_dialects_become_one_type():
    tools = normalize_tools(TOOLS)
    assert [t.name for t in tools] == ["get_weather", "math.factorial", "send_email"]
    fact = tools[1].parameters
    assert fact["type"] == "object" and fact["properties"]["mod"] == {"type": "number"}
    bfcl = normalize_tools([{"name": "f", "parameters": {"type": "dict", "properties": {
        "t": {"type": "tuple", "items": {"type": "any"}}, "x": {"type": ""}}}}])[0].parameters
    assert bfcl["properties"]["t"] == {"type": "array", "items": {}}
    assert bfcl["properties"]["x"] == {}


@pytest.mark.parametrize("tools, tool, path, keyword", [
    ([WEATHER, WEATHER], "get_weather", (1, "name"), "name"),
    ([{"name": "bad name!", "parameters": {}}], "#0", ("name",), "name"),
    ([{"name": "x" * 65, "parameters": {}}], "#0", ("name",), "name"),
    ([{"name": "f", "parameters": {"type": "string"}}], "f", ("parameters",), "type"),
    ([{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "strin"}}}}],
     "f", ("parameters", "properties", "a", "type"), None),
    ([{"name": "f", "parameters": {"type": "object", "properties": {"a": {"minLength": -1}}}}],
     "f", ("parameters", "properties", "a", "minLength"), "minimum"),
])
def test_bad_tools_name_tool_path_and_keyword(tools, tool, path, keyword):
    with pytest.raises(ToolSchemaError) as e:
        compile_tools(tools)
    assert e.value.tool == tool
    assert e.value.path == path
    if keyword:
        assert e.value.keyword == keyword
    assert tool in str(e.value)


def test_unresolvable_ref_names_tool_and_path():
    tool = {"name": "f", "parameters": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}
    with pytest.raises(ToolSchemaError) as e:
        compile_tools([tool])
    assert e.value.tool == "f" and e.value.keyword == "$ref"
    assert e.value.path == ("parameters", "properties", "a", "$ref")


def test_tool_choice_must_name_a_real_tool():
    with pytest.raises(ToolSchemaError, match="nope"):
        compile_tools(TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})


# ------------------------------------------------------------------------------------------- envelopes
@pytest.mark.parametrize("fmt", ["mistral", "hermes", "python"])
def test_envelopes_roundtrip_and_are_valid_for_both_engines(fmt):
    g = compile_tools(TOOLS, format=fmt)
    assert llg_ok(g.lark) and llg_ok(g.body_lark)
    calls = [("get_weather", {"location": "Paris", "days": 3}),
             ("math.factorial", {"n": 5}),
             ("send_email", {"to": ["a@b.co"], "subject": "hi", "meta": {"priority": 2, "tags": ["x", "é\"q"]}})]
    text = g.render(calls)
    assert g.accepts(text)
    parsed = g.parse(text)
    assert [(c.name, c.arguments) for c in parsed] == calls
    assert all(c.valid and c.id.startswith("call_") for c in parsed)
    assert len({c.id for c in parsed}) == 3


def test_name_is_tied_to_its_own_arguments():
    g = compile_tools(TOOLS)
    good = g.render([("math.factorial", {"n": 3})])
    assert g.accepts(good)
    assert not g.accepts(good.replace("math.factorial", "get_weather"))
    assert not g.accepts(good.replace("math.factorial", "math.factorials"))


@pytest.mark.parametrize("text", [
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris", "days": 15}}]',  # range
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris", "days": 0}}]',
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris", "unit": "kelvin"}}]',  # enum
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"days": 2}}]',  # required
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "P", "hallucinated": 1}}]',  # closed
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"days": 2, "location": "P"}}]',  # schema order
    '[TOOL_CALLS][{"name": "send_email", "arguments": {"to": [], "subject": "s"}}]',  # minItems
    '[TOOL_CALLS][{"name": "send_email", "arguments": {"to": ["not-an-email"], "subject": "s"}}]',  # format
    '[TOOL_CALLS][{"name": "send_email", "arguments": {"to": ["a@b.co"], "subject": "' + "x" * 21 + '"}}]',
    '[TOOL_CALLS][{"name": "send_email", "arguments": {"to": ["a@b.co"], "subject": "s", "meta": {}}}]',
    '[TOOL_CALLS][{"name": "math.factorial", "arguments": {"n": 1.5}}]',  # integer
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris"}} ]',  # canonical whitespace
    '[TOOL_CALLS][]',
    '[{"name": "get_weather", "arguments": {"location": "Paris"}}]',  # trigger
])
def test_invalid_calls_are_rejected(text):
    g = compile_tools(TOOLS)
    assert not g.accepts(text)
    with pytest.raises(GrammarMismatchError):
        g.parse(text)


def test_parallel_off_means_exactly_one_call_and_max_calls_bounds():
    one = [("math.factorial", {"n": 1})]
    two = one + [("math.factorial", {"n": 2})]
    g1 = compile_tools(TOOLS, parallel=False)
    assert g1.accepts(g1.render(one)) and not g1.accepts(g1.render(two))
    g2 = compile_tools(TOOLS, max_calls=2)
    assert g2.accepts(g2.render(two)) and not g2.accepts(g2.render(two + one))


def test_named_tool_choice_restricts_to_that_tool():
    g = compile_tools(TOOLS, tool_choice={"type": "function", "function": {"name": "math.factorial"}})
    assert g.tool_names == ["math.factorial"]
    assert not g.accepts('[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "P"}}]')


def test_flexible_whitespace_accepts_pretty_printed_calls():
    g = compile_tools(TOOLS, whitespace="flexible")
    text = '[TOOL_CALLS] [ {\n  "name": "get_weather",\n  "arguments": {"location" : "Paris"}\n} ]'
    assert g.accepts(text)
    assert g.parse(text)[0].arguments == {"location": "Paris"}
    assert not compile_tools(TOOLS).accepts(text)


def test_grammar_text_is_deterministic_and_readable():
    a = compile_tools(TOOLS).lark
    b = compile_tools(json.loads(json.dumps(TOOLS))).lark
    assert a == b
    assert "call_get_weather:" in a and "call_math_factorial:" in a and "send_email_args_meta" in a


def test_python_format_uses_python_literals():
    g = compile_tools(TOOLS, format="python")
    text = g.render([("send_email", {"to": ["a@b.co"], "subject": "s", "meta": {"priority": 1, "tags": []}})])
    assert text == '[send_email(to=["a@b.co"], subject="s", meta={"priority": 1, "tags": []})]'
    assert g.accepts('[math.factorial(n=3, mod=2.5)]')
    assert not g.accepts('[math.factorial(n=true)]')
    g2 = compile_tools([{"name": "f", "parameters": {"type": "object", "properties": {"b": {"type": "boolean"}}}}],
                       format="python")
    assert g2.accepts("[f(b=True)]") and not g2.accepts("[f(b=true)]")


def test_relaxed_keyword_is_caught_by_jsonschema_check():
    tool = {"name": "f", "parameters": {"type": "object", "properties": {
        "n": {"type": "integer", "multipleOf": 5}}, "required": ["n"]}}
    with pytest.warns(RelaxedSchemaWarning, match="multipleOf"):
        g = compile_tools([tool])
    text = '[TOOL_CALLS][{"name": "f", "arguments": {"n": 7}}]'
    assert g.accepts(text)  # the grammar over-accepts, by policy ...
    call = g.parse(text)[0]
    assert not call.valid and "multipleOf" in call.error  # ... and the check catches it
    assert g.parse(text.replace("7", "10"))[0].valid
    with pytest.raises(UnsupportedKeywordError) as e:
        compile_tools([tool], strict=True)
    assert e.value.keyword == "multipleOf" and e.value.path == ("parameters", "properties", "n")


def test_default_string_bound():
    g = compile_tools(TOOLS, max_string_length=5)
    assert g.accepts('[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris"}}]')
    assert not g.accepts('[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Parisx"}}]')


def test_render_of_invalid_call_raises():
    g = compile_tools(TOOLS)
    with pytest.raises(ValueError):
        g.render([("get_weather", {"days": 3})])
    with pytest.raises(ValueError):
        g.render([("nope", {})])


def test_empty_tools_list_is_an_error():
    with pytest.raises(ToolSchemaError):
        compile_tools([])


def test_tool_without_parameters():
    g = compile_tools([{"name": "ping"}])
    assert g.accepts('[TOOL_CALLS][{"name": "ping", "arguments": {}}]')
    assert g.parse('[TOOL_CALLS][{"name": "ping", "arguments": {}}]')[0].arguments == {}


# ------------------------------------------------------------------------------------------- compile_schema
KEYWORD_CASES = [
    ({"type": ["string", "null"]}, ["a", None], [1, True]),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
     [{"a": 1}, {"a": 1, "b": "open"}], [{}, {"a": "x"}]),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
     [{"a": 1}, {}], [{"b": 1}]),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, [{"x": 1, "y": 2}], [{"x": "s"}]),
    ({"enum": ["a", 1, None, [1, 2], {"k": "v"}]}, ["a", 1, None, [1, 2], {"k": "v"}], ["b", 2, [2, 1]]),
    ({"const": {"x": [1]}}, [{"x": [1]}], [{"x": [2]}]),
    ({"type": "string", "minLength": 2, "maxLength": 3}, ["ab", "abc", "é\"x"], ["a", "abcd"]),
    ({"type": "string", "pattern": "^[a-z]+-[0-9]{2}$"}, ["ab-12"], ["ab-1", "AB-12"]),
    ({"type": "string", "format": "date"}, ["2024-02-29"], ["2024-13-01", "yesterday"]),
    ({"type": "string", "format": "uuid"}, ["123e4567-e89b-12d3-a456-426614174000"], ["123"]),
    ({"type": "string", "format": "ipv4"}, ["192.168.0.1"], ["256.1.1.1"]),
    ({"type": "integer", "minimum": -5, "exclusiveMaximum": 120}, [-5, 0, 119], [-6, 120, 1.5]),
    ({"type": "number", "minimum": 0}, [0, 0.5, 1e-05, 3], [-1, -0.5]),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}, [[1], [1, 2]], [[], [1, 2, 3]]),
    ({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
     [["a", 1], ["a"], []], [["a", 1, 2], [1]]),
    ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 1}]}, [1, "a"], ["ab", None]),
    ({"oneOf": [{"type": "boolean"}, {"type": "null"}]}, [True, None], [0]),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
     [{"a": 1, "b": "x"}], [{"a": 1}, {"b": "x"}]),
    ({"$defs": {"t": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}},
                      "additionalProperties": False}}, "$ref": "#/$defs/t"},
     [{}, {"kids": [{}, {"kids": [{}]}]}], [{"kids": [{"x": 1}]}]),
    ({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {
        "c": {"type": "array", "items": {"type": "array", "items": {"enum": [1, 2]}}}}}}}}},
     [{"a": {"b": {"c": [[1, 2], []]}}}], [{"a": {"b": {"c": [[3]]}}}]),
    (True, [1, "x", None, {"a": [1]}], []),
    (False, [], [1, None]),
]


@pytest.mark.parametrize("schema, valid, invalid", KEYWORD_CASES)
def test_keywords(schema, valid, invalid):
    g = compile_schema(schema, assert_formats=True)
    assert llg_ok(g.lark)
    for v in valid:
        assert g.accepts_value(v), (v, g.render(v), g.lark)
    for v in invalid:
        assert not g.accepts_value(v), v


def test_compile_schema_objects_stay_open_but_tools_are_closed():
    params = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert compile_schema(params).accepts('{"a": "x", "b": 1}')
    g = compile_tools([{"name": "f", "parameters": params}])
    assert not g.accepts('[TOOL_CALLS][{"name": "f", "arguments": {"a": "x", "b": 1}}]')
    open_tool = {"name": "f", "parameters": dict(params, additionalProperties=True)}
    assert compile_tools([open_tool]).accepts('[TOOL_CALLS][{"name": "f", "arguments": {"a": "x", "b": 1}}]')


def test_formats_are_annotations_unless_asserted():
    schema = {"type": "string", "format": "date"}
    assert compile_schema(schema).accepts_value("yesterday")  # JSON Schema 2020-12 default
    assert not compile_schema(schema, assert_formats=True).accepts_value("yesterday")


def test_render_orders_keys_by_schema():
    g = compile_schema({"type": "object", "properties": {"a": {}, "b": {}}})
    assert g.render({"z": 0, "b": 2, "a": 1}) == '{"a": 1, "b": 2, "z": 0}'
    assert compile_schema({"type": "integer"}).render(3.0) == "3"
