"""The call-format registry: each format is one `CallFormat`, and adding one is one entry plus its template.
A toy format is added here that way and taken through every stage: compile, accept, parse, render, the call
scanner, the session's repeated-call rule, our decoding loop and the HF processor."""
import json

import pytest

from constrained_fc import compile_tools, generate
from constrained_fc.compiler.call_scanner import CallScanner
from constrained_fc.compiler.formats import (FORMATS, CallFormat, detect_format, get_format, register_format,
                                             unregister_format)
from constrained_fc.compiler.options import Options
from constrained_fc.errors import ConstrainedFCError, GrammarMismatchError
from constrained_fc.runtime.plan import CallPlan
from constrained_fc.runtime.session import Session
from test_session import _write  # feed text token by token, as forced where forced

# The whole format: an entry and its template. `<calls>` opens the list, calls are JSON objects separated by
# "; ", `</calls>` closes it.
TOY_TEMPLATE = """// Toy envelope: <calls>{call}; {call}</calls>
start: $trigger tool_calls
tool_calls: tool_call$more_calls "</calls>"
tool_call: $call_alternatives
"""
TOY = CallFormat("toy", trigger="<calls>", dialect="json", template=TOY_TEMPLATE, next_call='"; " tool_call',
                 list_open="", separator="; ", list_close="</calls>", template_marker="<calls>")

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
             "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "add", "parameters": {
             "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                           "b": {"type": "integer", "minimum": 0, "maximum": 99}},
             "required": ["a", "b"]}}}]
PARIS = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
ADD = '{"name": "add", "arguments": {"a": 1, "b": 2}}'


@pytest.fixture
def toy():
    register_format(TOY)
    yield TOY
    unregister_format("toy")


def test_builtin_formats_are_entries():
    assert list(FORMATS)[:3] == ["mistral", "hermes", "python"]
    assert get_format("hermes").trigger == "<tool_call>" and get_format("python").trigger == ""
    assert detect_format("{{ '<tool_call>' }}").name == "hermes"
    assert detect_format("{{ '[TOOL_CALLS]' }}").name == "mistral"
    assert detect_format("{{ messages }}") is None
    with pytest.raises(ConstrainedFCError, match="unknown format 'nope'"):
        compile_tools(TOOLS, format="nope")


def test_register_checks_its_input(toy):
    with pytest.raises(ConstrainedFCError, match="already registered"):
        register_format(TOY)
    with pytest.raises(ConstrainedFCError, match="dialect"):
        CallFormat("bad", trigger="", dialect="yaml", template="", next_call="")
    bad = CallFormat("bad", trigger="<x>", dialect="json", template="start: $trigger $nope\n", next_call="")
    with pytest.raises(ConstrainedFCError, match=r"'bad'.*\$nope|placeholder"):
        compile_tools(TOOLS, format=bad)


def test_toy_format_compiles_parses_and_renders(toy):
    g = compile_tools(TOOLS, format="toy")
    assert g.trigger == "<calls>" and '"</calls>"' in g.lark
    text = f"<calls>{PARIS}; {ADD}</calls>"
    assert g.accepts(text)
    assert not g.accepts(f"<calls>{PARIS}, {ADD}</calls>")  # not this format's separator
    assert not g.accepts(f"<calls>{PARIS}")  # not closed
    assert not g.accepts('<calls>{"name": "add", "arguments": {"a": "1", "b": 2}}</calls>')  # schema
    calls = g.parse(text)
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"}), ("add", {"a": 1, "b": 2})]
    assert all(c.valid for c in calls)
    assert g.render(calls) == text
    assert [(c.name, c.arguments) for c in g.parse(text, trusted=True)] == [(c.name, c.arguments) for c in calls]
    with pytest.raises(GrammarMismatchError):
        g.parse(f"<calls>{PARIS}; ", trusted=True)  # cut short
    one = compile_tools(TOOLS, format="toy", parallel=False)
    assert one.accepts(f"<calls>{PARIS}</calls>") and not one.accepts(text)
    two = compile_tools(TOOLS, format="toy", max_calls=2)
    assert two.accepts(text) and not two.accepts(f"<calls>{PARIS}; {ADD}; {PARIS}</calls>")


def test_toy_format_scanner_finds_calls_as_they_stream(toy):
    sc = CallScanner("toy")
    body = f"{PARIS}; {ADD}</calls>"
    sc.feed(body[:len(PARIS)])
    assert len(sc.calls) == 1 and sc.calls[0].complete and sc.between_calls
    sc.feed(body[:len(PARIS) + 3])  # the next call's "{" is open
    assert len(sc.calls) == 2 and not sc.calls[1].complete and not sc.between_calls
    sc.feed(body)
    assert [sc.name(c) for c in sc.calls] == ["get_weather", "add"]
    assert json.loads(sc.arguments_text(sc.calls[1])) == {"a": 1, "b": 2}


def test_toy_format_is_detected_from_a_chat_template(toy, tokenizer):
    import copy

    from constrained_fc.chat import uses_native_tool_format
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{%- for m in messages %}{{ m['content'] }}{% endfor %}{# calls: <calls>...</calls> #}"
    assert uses_native_tool_format(tok) == "toy"
    assert CallPlan(tok, TOOLS, tool_choice="required").format == "toy"


@pytest.mark.parametrize("rollback", [True, False])
def test_toy_format_repeated_call_closes_with_its_own_closing_text(toy, tokenizer, rollback):
    tok = tokenizer
    plan = CallPlan(tok, TOOLS, tool_choice="required", options=Options(format="toy"))
    assert tok.decode(plan.close_ids) == "</calls>"
    s = Session(plan, len(tok), started=True, rollback=rollback)
    _write(tok, s, f"{PARIS}; {PARIS}; {PARIS}")
    while not s.done and (forced := s.next_forced()):
        s.feed(forced[:1], forced=True)
    assert s.done and s.finish == "tool_calls" and s.duplicates_dropped >= 1
    text = tok.decode(s.body)
    assert text.endswith("</calls>")
    calls = compile_tools(TOOLS, format="toy").parse("<calls>" + text)
    assert {(c.name, json.dumps(c.arguments)) for c in calls} == {("get_weather", '{"city": "Paris"}')}
    if rollback:
        assert text == f"{PARIS}</calls>"


@pytest.mark.parametrize("fmt", ["toy", "hermes", "python"])
def test_every_format_end_to_end_in_both_decoding_paths(toy, tiny_model, fmt):
    """The random tiny model under each grammar (a trigger of several tokens, none at all): our loop and the
    HF processor both write a complete, schema-valid call list, and read back the same calls (greedy)."""
    import torch

    from constrained_fc import ToolCallLogitsProcessor
    from constrained_fc.chat import render_prompt
    model, tok = tiny_model
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    res = generate(model, tok, messages, TOOLS, tool_choice="required", format=fmt, max_new_tokens=80,
                   prompt_cache=False)
    f = get_format(fmt)
    assert res.text.startswith(f.trigger + f.list_open) and res.text.rstrip().endswith(f.list_close), res.text
    assert res.tool_calls and all(c.valid for c in res.tool_calls)
    assert res.finish_reason == "tool_calls"

    proc = ToolCallLogitsProcessor(tok, TOOLS, tool_choice="required", format=fmt)
    ids = torch.tensor([tok.encode(render_prompt(tok, messages, TOOLS), add_special_tokens=False)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), logits_processor=[proc], do_sample=False,
                         max_new_tokens=80, pad_token_id=tok.pad_token_id)
    (reply,) = proc.replies(out)
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [(c.name, c.arguments) for c in res.tool_calls]


@pytest.mark.parametrize("fmt, texts", [
    ("mistral", [("[", None), ('[{"name": "', ""), ('[{"name": "get_w', "get_w"), ('[{"name": "get_w", ', None),
                 ('[{"name": "a", "arguments": {"x": "{\\"name\\": \\"b"}}, {"name": "c', "c")]),
    ("hermes", [('\n{"name": "ge', "ge"), ('\n{"name": "get", "arguments": {"a": "b', None)]),
    ("python", [("[", ""), ("[get_w", "get_w"), ("[get_w(a=1", None), ("[get_w(a=1), ", ""),
                ('[get_w(a="[x, ")', None)]),
])
def test_the_scanner_knows_when_a_name_is_being_written(fmt, texts):
    # The retrieval prior steers only there (runtime.session): never inside an argument, even one whose text
    # looks like a call.
    for text, name in texts:
        sc = CallScanner(fmt)
        sc.feed(text)
        assert sc.open_name() == name, (fmt, text)
