"""Bad input fails early with a `ConstrainedFCError` naming where, never later from inside a dependency."""
import math

import pytest

import constrained_fc as cf
from constrained_fc.chat import ChatFormatError, normalize_messages
from constrained_fc.errors import ConstrainedFCError, ToolSchemaError


@pytest.mark.parametrize("tools", [5, None, {"tools": 5}, 3.5])
def test_tools_that_are_not_a_list(tools):
    with pytest.raises(ToolSchemaError, match="tools must be a list"):
        cf.compile_tools(tools)


@pytest.mark.parametrize("schema, needle", [
    (None, "must be an object or a boolean"),
    ({"properties": [1]}, "at properties"),
    ({"minLength": -3}, "at minLength"),
    ({"enum": "abc"}, "at enum"),  # a string is not an enum list, not ["a", "b", "c"]
    ({"type": "number", "maximum": math.inf}, "not a finite number"),
    ({"type": "string", "pattern": "([a-z"}, "not a regular expression"),
    ({"type": "string", "pattern": r"\p{L}+"}, "not a regular expression"),
    ({"type": "object", "patternProperties": {"(": {}}}, "patternProperties"),
])
def test_compile_schema_validates_its_input(schema, needle):
    with pytest.raises(ToolSchemaError, match=needle.replace("(", r"\(")):
        cf.compile_schema(schema)


def test_a_pattern_inside_data_is_not_a_regex():
    g = cf.compile_schema({"enum": [{"pattern": "(["}]})
    assert g.accepts_value({"pattern": "(["})


def test_invalid_tool_pattern_fails_at_compile_time_naming_tool_and_path():
    tools = [{"name": "w", "parameters": {"type": "object", "properties": {
        "p": {"type": "string", "pattern": "([a-z"}}}}]
    with pytest.raises(ToolSchemaError) as e:
        cf.compile_tools(tools)
    assert e.value.tool == "w" and e.value.keyword == "pattern"
    assert e.value.path == ("parameters", "properties", "p", "pattern")


@pytest.mark.parametrize("kw", [{"max_string_length": -1}, {"max_array_items": 0}, {"max_calls": 0},
                                {"max_string_length": 2.5}])
def test_bounds_must_be_positive_integers(kw):
    with pytest.raises(ConstrainedFCError, match=next(iter(kw))):
        cf.compile_tools([{"name": "f", "parameters": {}}], **kw)


def test_empty_messages():
    with pytest.raises(ChatFormatError, match="empty"):
        normalize_messages([])


@pytest.mark.parametrize("kw, needle", [({"max_new_tokens": 0}, "max_new_tokens"),
                                        ({"max_new_tokens": -1}, "max_new_tokens"),
                                        ({"do_sample": True, "top_p": 0.0}, "top_p"),
                                        ({"do_sample": True, "temperature": -1.0}, "temperature")])
def test_generation_settings_are_checked(tiny_model, kw, needle):
    model, tok = tiny_model
    with pytest.raises(ConstrainedFCError, match=needle):
        cf.generate(model, tok, [{"role": "user", "content": "hi"}], [], **kw)


def test_conversation_continues_after_a_length_cut_turn(tiny_model):
    model, tok = tiny_model
    tools = [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}]
    msgs = [{"role": "user", "content": "hi"}]
    r = cf.generate(model, tok, msgs, tools, tool_choice="none", max_new_tokens=1)
    assert r.finish_reason == "length"
    from constrained_fc.runtime.decoding import Result
    empty_cut = Result(content="", finish_reason="length")  # cut before it wrote any text or call
    for turn in (r.to_message(), empty_cut.to_message()):
        follow = msgs + [turn, {"role": "user", "content": "and tomorrow?"}]
        r2 = cf.generate(model, tok, follow, tools, tool_choice="none", max_new_tokens=2)
        assert r2.finish_reason in ("length", "stop")
