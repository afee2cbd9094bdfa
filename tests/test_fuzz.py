"""Property tests over random schemas of the supported subset and random malformed input.

For every generated schema: it compiles, its grammar passed llguidance's check, and for instances drawn by
hypothesis-jsonschema the canonical rendering is accepted by `Grammar.accepts` and by a real `TokenMatcher` walk over the
tokenizer's ids, and parses back (through `compile_tools`) to a valid call with the same arguments. Random
tool lists, schemas and messages end in a `ConstrainedFCError` subclass or succeed; nothing else escapes.

CI runs the derandomised profile (the same examples every run); for a longer search:
    pytest tests/test_fuzz.py --hypothesis-profile=long
"""
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

import constrained_fc as cf
from constrained_fc.chat import render_prompt
from constrained_fc.runtime.matcher import TokenMatcher

NAMES = st.text("abcdefgh_", min_size=1, max_size=6)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text("abcxyz -", max_size=6))


def _bounded(kind: str, draw) -> dict:
    s = {"type": kind}
    if kind == "string":
        lo = draw(st.integers(0, 3))
        s["minLength"] = lo
        s["maxLength"] = lo + draw(st.integers(0, 6))
    elif kind in ("integer", "number"):
        lo = draw(st.integers(-100, 100))
        if draw(st.booleans()):
            s["minimum"] = lo
        if draw(st.booleans()):
            s["maximum"] = lo + draw(st.integers(0, 500))
    return s


@st.composite
def leaf(draw):
    kind = draw(st.sampled_from(["string", "integer", "number", "boolean", "null", "enum", "const"]))
    if kind == "enum":
        return {"enum": draw(st.lists(SCALARS, min_size=1, max_size=4, unique_by=json.dumps))}
    if kind == "const":
        return {"const": draw(SCALARS)}
    return _bounded(kind, draw)


def _extend(children):
    @st.composite
    def container(draw):
        kind = draw(st.sampled_from(["object", "array", "anyOf", "nullable"]))
        if kind == "array":
            return {"type": "array", "items": draw(children), "maxItems": draw(st.integers(0, 3))}
        if kind == "anyOf":
            return {"anyOf": draw(st.lists(children, min_size=1, max_size=3))}
        if kind == "nullable":
            inner = draw(children)
            return {"anyOf": [inner, {"type": "null"}]}
        return draw(objects(children))
    return container()


@st.composite
def objects(draw, children=None):
    children = children if children is not None else st.deferred(lambda: SCHEMAS)
    props = draw(st.dictionaries(NAMES, children, max_size=4))
    required = [k for k in props if draw(st.booleans())]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


SCHEMAS = st.recursive(leaf(), _extend, max_leaves=6)


def _examples(ci: int) -> int:
    """`ci` examples in the default run; the loaded profile's count when it asks for more (`long`)."""
    return max(ci, settings.default.max_examples) if settings.default.max_examples >= 500 else ci


@pytest.fixture(scope="module")
def tok():
    from constrained_fc.model import load_default_tokenizer
    return load_default_tokenizer()


def _walk(tok, lark_text: str, text: str) -> bool:
    m = TokenMatcher(lark_text, tok)
    for t in tok.encode(text, add_special_tokens=False):
        if not m.consume(t):
            return False
    return m.accepting


@settings(max_examples=_examples(40), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                   HealthCheck.filter_too_much])
@given(data=st.data())
def test_schema_compile_render_accept_walk_parse_agree(tok, data):
    params = data.draw(objects(), label="parameters")
    grammar = cf.compile_schema(params, warn=False)
    try:
        instance = data.draw(from_schema(params), label="instance")
    except Exception:  # hypothesis-jsonschema cannot draw from every satisfiable schema
        assume(False)
    jsonschema.validate(instance, params)
    text = grammar.render(instance)
    # Characters the tokenizer cannot spell (unassigned planes such as U+40000 come back as U+FFFD) are
    # beyond any model on it: not a grammar question.
    assume(tok.decode(tok.encode(text, add_special_tokens=False)) == text)
    assert grammar.accepts(text), text
    assert _walk(tok, grammar.lark, text), text
    tools = cf.compile_tools([{"name": "f", "parameters": params}], warn=False)
    call_text = tools.render([cf.ToolCall("f", instance)])
    assert _walk(tok, tools.body_lark, call_text[len(tools.trigger):]), call_text
    (call,) = tools.parse(call_text)
    assert call.valid, call.error
    assert json.dumps(call.arguments, sort_keys=True) == json.dumps(instance, sort_keys=True)


JSONISH = st.recursive(st.one_of(SCALARS, st.floats(allow_nan=True, allow_infinity=True)),
                       lambda c: st.one_of(st.lists(c, max_size=3),
                                           st.dictionaries(st.sampled_from(
                                               ["type", "name", "function", "parameters", "properties",
                                                "required", "enum", "items", "$ref", "anyOf", "minimum",
                                                "pattern", "description", "x"]), c, max_size=4)),
                       max_leaves=12)


@settings(max_examples=_examples(150))
@given(tools=JSONISH)
def test_malformed_tools_raise_one_error_type(tools):
    try:
        cf.compile_tools(tools, warn=False)
    except cf.ConstrainedFCError:
        pass


@settings(max_examples=_examples(150))
@given(schema=JSONISH)
def test_malformed_schemas_raise_one_error_type(schema):
    try:
        cf.compile_schema(schema, warn=False)
    except cf.ConstrainedFCError:
        pass


MESSAGE = st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "name",
                                           "function_call"]),
                          st.one_of(st.sampled_from(["user", "assistant", "tool", "system", "bot"]), JSONISH),
                          max_size=4)


@settings(max_examples=_examples(150))
@given(messages=st.one_of(JSONISH, st.lists(MESSAGE, max_size=4)))
def test_malformed_messages_raise_one_error_type(tok, messages):
    try:
        render_prompt(tok, messages, None)
    except cf.ConstrainedFCError:
        pass
