"""Reading calls back without a second parser: text the token matcher produced is read with json / ast
(`parse(text, trusted=True)`); any other text is first checked by llguidance (`accepts`, `parse`), the engine
that masks tokens. Both paths must give the same calls, and text cut short must never read as calls."""
import json

import lark
import pytest

import constrained_fc as cf
from constrained_fc.compiler import tool_grammar
from constrained_fc.errors import GrammarMismatchError
from constrained_fc.runtime.reply import parse_body, parse_generated

# A config-style API: 150 optional properties (string, integer, two-value enum, in turn).
KINDS = [{"type": "string"}, {"type": "integer"}, {"enum": ["on", "off"]}]
BIG = {"type": "object", "properties": {f"p{i:03d}": KINDS[i % 3] for i in range(150)}}
BIG_VALUE = {f"p{i:03d}": ["abc", 42, "on"][i % 3] for i in range(0, 150, 2)}  # every other one set

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "location": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 14}}, "required": ["location"]}}
SEARCH = {"name": "search", "parameters": {"type": "object", "properties": {
    "query": {"type": "string"},
    "filters": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        "range": {"type": "object", "properties": {"lo": {"type": "number"}, "hi": {"type": "number"}}},
        "exact": {"type": "boolean"}}},
    "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    "limit": {"type": "integer"}}, "required": ["query"]}}
FACTORIAL = {"name": "math.factorial", "parameters": {"type": "object", "properties": {
    "n": {"type": "integer"}, "mod": {"type": "number"}}, "required": ["n"]}}
# Names Python does not read as a name: the python format splits these lists with the call scanner.
ODD_NAMES = [{"name": "get-weather", "parameters": WEATHER["parameters"]},
             {"name": "2fa.check", "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}},
             {"name": "-x", "parameters": {"type": "object", "properties": {}}}]
EXTRA = {"name": "tag", "parameters": {"type": "object", "properties": {"id": {"type": "string"}},
                                       "additionalProperties": {"type": "integer"}}}

TOOL_SETS = {
    "weather": ([WEATHER], [("get_weather", {"location": "Zürich \"old town\"\n", "unit": "celsius", "days": 3}),
                            ("get_weather", {"location": "東京 🌸 \\ back"})]),
    "nested": ([WEATHER, SEARCH], [
        ("search", {"query": "q", "filters": {"tags": ["a", "b c"], "range": {"lo": -1.5, "hi": 2e-3},
                                              "exact": False}, "note": None, "limit": 0}),
        ("get_weather", {"location": "Paris"}),
        ("search", {"query": "", "note": "n"})]),
    "dotted": ([FACTORIAL, WEATHER], [("math.factorial", {"n": 5, "mod": 2.5}),
                                      ("get_weather", {"location": "Rome", "days": 14})]),
    "odd names": (ODD_NAMES, [("get-weather", {"location": "x(y)", "unit": "fahrenheit"}),
                              ("2fa.check", {"code": "0, 1]"}), ("-x", {})]),
    "extra keys": ([EXTRA], [("tag", {"id": "a", "w": 1, "zz": -2})]),
    "big": ([{"name": "configure", "parameters": BIG}], [("configure", BIG_VALUE), ("configure", {"p001": 7})]),
}
FORMATS = ("mistral", "hermes", "python")


def _calls(calls):
    return [(c.name, c.arguments, c.error) for c in calls]


def _grammar(tools, fmt, **kw):
    return cf.compile_tools(tools, format=fmt, warn=False, **kw)


@pytest.mark.parametrize("fmt", FORMATS)
def test_big_object_reads_back_its_arguments(fmt):
    g = _grammar([{"name": "configure", "parameters": BIG}], fmt)
    text = g.render([cf.ToolCall("configure", BIG_VALUE)])
    for trusted in (True, False):
        (call,) = g.parse(text, trusted=trusted)
        assert call.name == "configure" and call.valid
        assert call.arguments == BIG_VALUE and list(call.arguments) == list(BIG_VALUE)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(TOOL_SETS))
def test_fast_and_checked_paths_agree_with_the_calls_rendered(fmt, name):
    tools, calls = TOOL_SETS[name]
    g = _grammar(tools, fmt)
    for some in (calls[:1], calls):  # one call, and a parallel list
        text = g.render([cf.ToolCall(n, a) for n, a in some])
        assert g.accepts(text), text
        fast, checked = g.parse(text, trusted=True), g.parse(text)
        assert _calls(fast) == _calls(checked) == [(n, a, None) for n, a in some]
        assert _calls(g.parse(text, trusted=True, validate=False)) == _calls(fast)


FLEXIBLE = {
    "mistral": '[TOOL_CALLS] [ {"name" :"get_weather",\n "arguments": { "location" : "Oslo" ,"days":2 } } ,'
               '{"name": "get_weather", "arguments": {"location": "Bergen"}}\n]',
    "hermes": '<tool_call>\n{ "name": "get_weather" , "arguments" :{"location":"Oslo", "days": 2}}\n</tool_call>'
              '\n<tool_call>\n{"name": "get_weather", "arguments": {"location": "Bergen"}\t}\n</tool_call>',
    "python": '[get_weather(location="Oslo" , days=2),\n get_weather(location="Bergen")]',
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_flexible_whitespace_reads_the_same(fmt):
    g = _grammar([WEATHER], fmt, whitespace="flexible")
    text = FLEXIBLE[fmt]
    assert g.accepts(text)
    want = [("get_weather", {"location": "Oslo", "days": 2}, None), ("get_weather", {"location": "Bergen"}, None)]
    assert _calls(g.parse(text, trusted=True)) == _calls(g.parse(text)) == want
    assert not _grammar([WEATHER], fmt).accepts(text)  # canonical whitespace only


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["weather", "odd names", "dotted"])
def test_every_prefix_reads_as_calls_only_where_the_grammar_accepts_it(fmt, name):
    """Generation stopped mid-call must give no calls on the fast path, exactly where llguidance would say
    the text is incomplete (a hermes list may end after any block)."""
    tools, calls = TOOL_SETS[name]
    g = _grammar(tools, fmt)
    text = g.render([cf.ToolCall(n, a) for n, a in calls])
    complete = 0
    for cut in range(len(text) + 1):
        prefix = text[:cut]
        if g.accepts(prefix):
            complete += 1
            assert _calls(g.parse(prefix, trusted=True)) == _calls(g.parse(prefix))
        else:
            with pytest.raises(GrammarMismatchError):
                g.parse(prefix, trusted=True)
    assert complete == (len(calls) if fmt == "hermes" else 1)


REJECTED = {
    "mistral": ['[TOOL_CALLS][{"name": "get_weather", "arguments": {"days": 3, "location": "P"}}]',  # key order
                '[TOOL_CALLS][{"name": "get_weathers", "arguments": {"location": "P"}}]',
                '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "P", "days": 3.0}}]',
                '[{"name": "get_weather", "arguments": {"location": "P"}}]'],
    "hermes": ['<tool_call>\n{"name": "get_weather", "arguments": {"location": "P", "unit": "kelvin"}}\n</tool_call>',
               '<tool_call>{"name": "get_weather", "arguments": {"location": "P"}}</tool_call>'],
    "python": ['[get_weather(location="P", days=15)]', '[get_weather(location=\'P\')]',
               '[get_weather(location="P")', 'get_weather(location="P")'],
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_rejected_text_raises_a_one_line_grammar_mismatch(fmt):
    g = _grammar([WEATHER], fmt)
    for text in REJECTED[fmt]:
        assert not g.accepts(text), text
        with pytest.raises(GrammarMismatchError, match=f"not a valid {fmt} tool call") as e:
            g.parse(text)
        assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_mismatch_message_names_where_the_text_fails():
    g = _grammar([WEATHER], "mistral")
    with pytest.raises(GrammarMismatchError, match=r"unexpected '\.0\}\}\]' at character \d+"):
        g.parse('[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "P", "days": 3.0}}]')
    with pytest.raises(GrammarMismatchError, match="ends .* before the grammar is complete"):
        g.parse('[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "P"}}')


def test_schema_errors_still_come_back_as_call_errors_on_both_paths():
    tool = {"name": "f", "parameters": {"type": "object", "properties": {
        "n": {"type": "integer", "multipleOf": 5}}, "required": ["n"]}}
    g = _grammar([tool], "mistral")
    text = '[TOOL_CALLS][{"name": "f", "arguments": {"n": 7}}]'
    for trusted in (True, False):
        (call,) = g.parse(text, trusted=trusted)
        assert not call.valid and "multipleOf" in call.error


def test_big_object_accepts_value_and_accepts():
    g = cf.compile_schema(BIG)
    assert g.accepts_value(BIG_VALUE) and g.accepts_value({}) and g.accepts_value({"p149": "off"})
    assert not g.accepts_value({**BIG_VALUE, "p002": "maybe"})
    assert not g.accepts_value({**BIG_VALUE, "p001": "42"})
    text = g.render(BIG_VALUE)
    assert g.accepts(text)
    # Valid JSON of a valid value, but not the grammar's canonical text.
    assert not g.accepts(text.replace('"p000": ', '"p000":'))
    assert not g.accepts(text[:-1]) and not g.accepts(text + " ")
    closed = cf.compile_schema({**BIG, "additionalProperties": False})
    assert closed.accepts(text)
    assert not closed.accepts(json.dumps(dict(reversed(list(BIG_VALUE.items())))))  # keys out of order
    assert not closed.accepts_value({**BIG_VALUE, "extra": 1})


def test_trusted_read_back_runs_neither_lark_nor_a_grammar_check(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the fast path ran a parser")
    monkeypatch.setattr(tool_grammar, "mismatch", boom)
    monkeypatch.setattr(lark.Lark, "parse", boom)
    g = _grammar([WEATHER], "mistral")
    body = g.render([cf.ToolCall("get_weather", {"location": "Paris"})])[len(g.trigger):]
    reply = parse_body(g, "", body, trusted=True)
    assert reply.complete and _calls(reply.tool_calls) == [("get_weather", {"location": "Paris"}, None)]
    assert not parse_body(g, "", body[:-1], trusted=True).complete


def test_parse_generated_trusts_only_the_ids_the_matcher_consumed(tokenizer, monkeypatch):
    g = _grammar([WEATHER], "mistral")
    trigger = tokenizer.convert_tokens_to_ids(g.trigger)
    body = tokenizer.encode(g.render([cf.ToolCall("get_weather", {"location": "Paris"})])[len(g.trigger):],
                            add_special_tokens=False)
    checks = []
    real = tool_grammar.mismatch
    monkeypatch.setattr(tool_grammar, "mismatch", lambda *a: checks.append(a) or real(*a))
    ids = [trigger] + body + [tokenizer.eos_token_id]
    assert parse_generated(tokenizer, g, ids, trigger, consumed=body).tool_calls and not checks
    assert parse_generated(tokenizer, g, ids, trigger, consumed=body[:-1]).tool_calls and len(checks) == 1
    assert parse_generated(tokenizer, g, ids, trigger).tool_calls and len(checks) == 2


# Short strings, so that a random model finishes its calls within the token budget.
RUNTIME_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
]
MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_decoding_reads_its_calls_back_without_a_second_check(tiny_model, monkeypatch):
    from constrained_fc.chat import render_prompt
    model, tok = tiny_model
    monkeypatch.setattr(tool_grammar, "mismatch", lambda *a: pytest.fail("decoding re-checked its own text"))
    r = cf.generate(model, tok, MSGS, RUNTIME_TOOLS, tool_choice="required", max_new_tokens=64)
    assert r.tool_calls and all(c.valid for c in r.tool_calls)
    proc = cf.ToolCallLogitsProcessor(tok, RUNTIME_TOOLS, tool_choice="required")
    enc = tok([render_prompt(tok, MSGS, RUNTIME_TOOLS)], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, logits_processor=[proc], max_new_tokens=64, do_sample=False,
                         pad_token_id=tok.eos_token_id)
    (reply,) = proc.replies(out)
    assert reply.complete and reply.tool_calls and all(c.valid for c in reply.tool_calls)
