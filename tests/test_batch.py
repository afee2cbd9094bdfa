"""Batched decoding in our own loop: `generate` given a list of conversations decodes them as one batch (a
ragged feed: each row its own sampled token and forced run per pass), and each row's greedy output is the
single-conversation output."""
import pytest

import constrained_fc as cf
from constrained_fc.errors import ConstrainedFCError

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
]
OTHER = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {
    "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}]
CONVS = [
    [{"role": "user", "content": "What is the weather in Paris?"}],
    [{"role": "user", "content": "Add 2 and 3, please. I need the sum for a longer report I am writing."}],
    [{"role": "user", "content": "Hi"}],
]


def _single(model, tok, convs, tools, **kw):
    return [cf.generate(model, tok, c, t, prompt_cache=False, **kw) for c, t in zip(convs, tools)]


@pytest.mark.parametrize("choice", ["required", "auto"])
def test_batch_equals_one_by_one_on_a_tiny_model(tiny_model, choice):
    model, tok = tiny_model
    tools = [TOOLS, OTHER, TOOLS]
    batch = cf.generate(model, tok, CONVS, tools, tool_choice=choice, max_new_tokens=40)
    single = _single(model, tok, CONVS, tools, tool_choice=choice, max_new_tokens=40)
    assert isinstance(batch, list) and len(batch) == len(CONVS)
    for b, s in zip(batch, single):
        assert b.token_ids == s.token_ids and b.forced == s.forced
        assert b.finish_reason == s.finish_reason and b.content == s.content
        assert [(c.name, c.arguments, c.valid) for c in b.tool_calls] == \
               [(c.name, c.arguments, c.valid) for c in s.tool_calls]
    if choice == "required":
        assert all(r.stats.tokens_forced for r in batch) and any(r.tool_calls for r in batch)
        # Fast-forward per row: the batch needs fewer passes than its longest row has tokens.
        assert batch[0].stats.forward_passes < max(r.stats.tokens_generated for r in batch) + 1


def test_rows_end_at_different_times_and_leave_the_batch(tiny_model):
    model, tok = tiny_model
    budgets = cf.generate(model, tok, CONVS, TOOLS, tool_choice="required", max_new_tokens=6)
    assert all(r.stats.tokens_generated <= 6 for r in budgets)
    assert all(r.finish_reason == "length" or r.tool_calls for r in budgets)
    mixed = cf.generate(model, tok, [CONVS[0], CONVS[2]], [TOOLS, []], tool_choice="auto", max_new_tokens=30)
    assert not mixed[1].tool_calls and mixed[1].stats.tokens_generated <= 30


def test_batch_errors_name_the_problem(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ConstrainedFCError, match="stream"):
        cf.generate(model, tok, CONVS, TOOLS, stream=True)
    with pytest.raises(ConstrainedFCError, match="3 conversations but 2 tool lists"):
        cf.generate(model, tok, CONVS, [TOOLS, OTHER])


def test_batch_with_a_response_format(tiny_model):
    model, tok = tiny_model
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    out = cf.generate(model, tok, CONVS[:2], None, max_new_tokens=20,
                      response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    single = _single(model, tok, CONVS[:2], [None, None], max_new_tokens=20,
                     response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    assert [r.content for r in out] == [r.content for r in single]


@pytest.mark.model
def test_batch_on_the_shipped_model_matches_single_calls(smollm):
    """BFCL `simple`, batch of 4 against one by one: the same calls (greedy)."""
    from constrained_fc.eval.data import load_bfcl
    model, tok = smollm
    cases = load_bfcl("simple", limit=4)
    batch = cf.generate(model, tok, [c.messages for c in cases], [c.functions for c in cases], max_new_tokens=96)
    single = _single(model, tok, [c.messages for c in cases], [c.functions for c in cases], max_new_tokens=96)
    assert [[(c.name, c.arguments) for c in r.tool_calls] for r in batch] == \
           [[(c.name, c.arguments) for c in r.tool_calls] for r in single]
    assert all(r.tool_calls and all(c.valid for c in r.tool_calls) for r in batch)
