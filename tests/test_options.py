"""`Options`: one frozen, hashable bundle of the grammar's choices and bounds, taken by every decoding path and
used as the grammar cache key; plain keywords override its fields; `strict` reaches generate and the
processor."""
import dataclasses

import pytest

import constrained_fc as cf
from constrained_fc import Options, UnsupportedKeywordError
from constrained_fc.compiler.options import UNSET
from constrained_fc.runtime.plan import CallPlan, _compile_cached

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
# oneOf's exclusivity has no grammar: relaxed to anyOf by default, an error with strict=True.
RELAXED = [{"type": "function", "function": {"name": "pick", "parameters": {
    "type": "object", "properties": {"n": {"oneOf": [{"type": "integer"}, {"type": "number"}]}},
    "required": ["n"]}}}]
MSGS = [{"role": "user", "content": "Weather in Paris?"}]


def test_options_are_frozen_hashable_and_documented_once():
    a, b = Options(max_calls=2), Options(max_calls=2)
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.max_calls = 3
    assert Options().max_calls == 8 and Options().max_string_length == 128 and Options().max_array_items == 16


def test_keywords_override_only_what_they_name():
    base = Options(max_calls=2, whitespace="flexible")
    got = Options.resolve(base, max_calls=UNSET, strict=True, max_array_items=None)
    assert got == Options(max_calls=2, whitespace="flexible", strict=True, max_array_items=None)
    assert Options.resolve(None) == Options()
    with pytest.raises(cf.ConstrainedFCError, match="Options"):
        Options.resolve({"max_calls": 2})


def test_options_are_the_grammar_cache_key(tokenizer):
    before = _compile_cached.cache_info()
    p1 = CallPlan(tokenizer, TOOLS, options=Options(max_calls=3))
    p2 = CallPlan(tokenizer, TOOLS, options=Options(max_calls=3))
    p3 = CallPlan(tokenizer, TOOLS, options=Options(max_calls=4))
    assert p1.grammar is p2.grammar and p3.grammar is not p1.grammar
    assert _compile_cached.cache_info().hits >= before.hits + 1


def test_bad_option_values_are_named(tokenizer):
    with pytest.raises(cf.ConstrainedFCError, match="max_calls"):
        CallPlan(tokenizer, TOOLS, options=Options(max_calls=0))
    with pytest.raises(cf.ConstrainedFCError, match="format"):
        CallPlan(tokenizer, TOOLS, options=Options(format="xml"))


def test_strict_reaches_generate_and_the_processor(tiny_model):
    model, tok = tiny_model
    res = cf.generate(model, tok, MSGS, RELAXED, tool_choice="required", max_new_tokens=30)
    assert res.finish_reason in ("tool_calls", "length")
    with pytest.raises(UnsupportedKeywordError, match="oneOf"):
        cf.generate(model, tok, MSGS, RELAXED, strict=True, max_new_tokens=5)
    with pytest.raises(UnsupportedKeywordError, match="oneOf"):
        cf.generate(model, tok, MSGS, RELAXED, options=Options(strict=True), max_new_tokens=5)
    with pytest.raises(UnsupportedKeywordError, match="oneOf"):
        cf.ToolCallLogitsProcessor(tok, RELAXED, options=Options(strict=True))
    assert cf.ToolCallLogitsProcessor(tok, RELAXED).plan.options.strict is False


def test_generate_options_and_keywords_give_the_same_turn(tiny_model):
    model, tok = tiny_model
    a = cf.generate(model, tok, MSGS, TOOLS, tool_choice="required", max_new_tokens=40,
                    options=Options(max_string_length=5, parallel=False))
    b = cf.generate(model, tok, MSGS, TOOLS, tool_choice="required", max_new_tokens=40,
                    max_string_length=5, parallel=False)
    assert a.token_ids == b.token_ids
    for call in a.tool_calls:
        assert len(call.arguments["city"]) <= 5


@pytest.mark.model
def test_cli_strict_flag(tmp_path, capsys):
    import json

    from constrained_fc.cli import main
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(RELAXED))
    assert main(["call", "--tools", str(path), "--strict", "--model", "base", "--prompt", "pick one"]) == 2
    assert "oneOf" in capsys.readouterr().err
