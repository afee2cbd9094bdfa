"""Decoding on a tiny random model (no weights): the logits processor, our own loop, fast-forward, rollback of
repeated calls, limits. Fast; the real-model behaviour is in test_model_calls.py."""
import json
import types

import pytest
import torch

import constrained_fc as cf
from constrained_fc.chat import TOOL_CALLS, render_prompt
from constrained_fc.errors import ConstrainedFCError
from constrained_fc.runtime.matcher import TokenMatcher

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
]
MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]


class Biased(torch.nn.Module):
    """Wraps a causal LM and adds a bias to some token ids: makes a random model *want* a token."""

    def __init__(self, model, bias: dict):
        super().__init__()
        self.inner = model
        self.bias = bias

    @property
    def device(self):
        return self.inner.device

    def forward(self, **kw):
        out = self.inner(**kw)
        for t, b in self.bias.items():
            out.logits[..., t] += b
        return out


class Scripted(torch.nn.Module):
    """A 'model' that wants to write a given text after the prompt: each step it scores every token by how
    much of the remaining script it spells. Lets a test decide exactly what the model tries to write."""

    def __init__(self, tokenizer, script: str, vocab_size: int):
        super().__init__()
        self.tok = tokenizer
        self.script = script
        self.vocab = [tokenizer.decode([i]) for i in range(vocab_size)]
        self.ids: list[int] = []
        self.prompt_len = None
        # The prompt is prefilled in segments (decoding.prefill_segments); it ends with the generation prompt.
        self.gen_prompt = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids, **kw):
        self.ids += input_ids[0].tolist()
        if self.prompt_len is None:
            if self.ids[-len(self.gen_prompt):] != self.gen_prompt:
                return types.SimpleNamespace(logits=torch.zeros(1, input_ids.shape[1], len(self.vocab)))
            self.prompt_len = len(self.ids)
        done = self.tok.decode(self.ids[self.prompt_len:], skip_special_tokens=False)
        rest = self.script[len(done):] if self.script.startswith(done) else ""
        scores = torch.full((len(self.vocab),), -10.0)
        if rest.startswith(TOOL_CALLS):
            scores[self.tok.convert_tokens_to_ids(TOOL_CALLS)] = 100.0
        elif TOOL_CALLS in rest:  # plain tokens must not spell the special token
            rest = rest[:rest.index(TOOL_CALLS)]
        for i, s in enumerate(self.vocab):
            if s and rest.startswith(s) and s != TOOL_CALLS:
                scores[i] = len(s)
        if not rest:
            scores[self.tok.eos_token_id] = 10.0
        logits = torch.zeros(1, input_ids.shape[1], len(self.vocab))
        logits[0, -1] = scores
        return types.SimpleNamespace(logits=logits)


def test_required_gives_a_valid_call_and_fast_forward_saves_passes(tiny_model):
    model, tok = tiny_model
    a = cf.generate(model, tok, MSGS, TOOLS, tool_choice="required", max_new_tokens=64, fast_forward=True)
    b = cf.generate(model, tok, MSGS, TOOLS, tool_choice="required", max_new_tokens=64, fast_forward=False)
    assert a.text == b.text
    assert a.finish_reason == "tool_calls" and a.tool_calls and all(c.valid for c in a.tool_calls)
    assert a.stats.tokens_forced > 0
    assert a.stats.forward_passes < b.stats.forward_passes
    assert b.stats.forward_passes == b.stats.tokens_generated  # no fast-forward: one pass per token (+prompt,
    # -the last token, which needs no pass)


def test_none_never_calls(tiny_model):
    model, tok = tiny_model
    trigger = tok.convert_tokens_to_ids(TOOL_CALLS)
    biased = Biased(model, {trigger: 50.0})
    r = cf.generate(biased, tok, MSGS, TOOLS, tool_choice="none", max_new_tokens=8)
    assert r.tool_calls == [] and TOOL_CALLS not in r.text
    r = cf.generate(biased, tok, MSGS, TOOLS, tool_choice="auto", max_new_tokens=64)
    assert r.tool_calls and r.finish_reason == "tool_calls"  # auto: the trigger wakes the grammar


def test_named_tool_choice(tiny_model):
    model, tok = tiny_model
    r = cf.generate(model, tok, MSGS, TOOLS, tool_choice={"type": "function", "function": {"name": "ping"}},
                    max_new_tokens=64)
    assert [c.name for c in r.tool_calls][:1] == ["ping"] and all(c.name == "ping" for c in r.tool_calls)


def test_eos_inside_a_call_is_masked(tiny_model):
    model, tok = tiny_model
    biased = Biased(model, {tok.eos_token_id: 100.0})
    r = cf.generate(biased, tok, MSGS, TOOLS, tool_choice="required", max_new_tokens=64)
    assert r.finish_reason == "tool_calls" and r.tool_calls and all(c.valid for c in r.tool_calls)


def test_length_inside_a_call_returns_no_half_call(tiny_model):
    model, tok = tiny_model
    r = cf.generate(model, tok, MSGS, TOOLS, tool_choice="required", max_new_tokens=10)
    assert r.finish_reason == "length" and r.tool_calls == []


def test_empty_tools_list(tiny_model):
    model, tok = tiny_model
    r = cf.generate(model, tok, MSGS, [], max_new_tokens=5)
    assert r.tool_calls == [] and r.finish_reason in ("stop", "length")
    with pytest.raises(ConstrainedFCError):
        cf.generate(model, tok, MSGS, [], tool_choice="required")


def test_repeated_call_is_rolled_back_and_list_closed(tiny_model):
    _, tok = tiny_model
    call = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'
    other = '{"name": "get_weather", "arguments": {"city": "Rome", "unit": "c"}}'
    script = f"{TOOL_CALLS}[{call}, {other}, {call}, {call}]"
    model = Scripted(tok, script, len(tok))
    r = cf.generate(model, tok, MSGS, TOOLS, tool_choice="auto", max_new_tokens=120)
    assert [c.arguments["city"] for c in r.tool_calls] == ["Paris", "Rome"]
    assert r.text == f"{TOOL_CALLS}[{call}, {other}]"  # never emitted: the list closed before the repeat
    assert r.stats.duplicates_dropped == 1 and r.finish_reason == "tool_calls"


def test_max_calls_bounds_a_turn(tiny_model):
    _, tok = tiny_model
    calls = [f'{{"name": "get_weather", "arguments": {{"city": "c{i}", "unit": "c"}}}}' for i in range(5)]
    model = Scripted(tok, f"{TOOL_CALLS}[{', '.join(calls)}]", len(tok))
    r = cf.generate(model, tok, MSGS, TOOLS, max_calls=3, max_new_tokens=200)
    assert len(r.tool_calls) == 3 and r.finish_reason == "tool_calls"


def test_free_text_then_call_and_streaming(tiny_model):
    _, tok = tiny_model
    call = '{"name": "get_weather", "arguments": {"city": "Zürich", "unit": "f", "days": 2}}'
    script = f"Let me check.{TOOL_CALLS}[{call}]"
    deltas = list(cf.generate(Scripted(tok, script, len(tok)), tok, MSGS, TOOLS, stream=True, max_new_tokens=80))
    result = deltas[-1]["result"]
    assert result.content == "Let me check."
    assert result.tool_calls[0].arguments == {"city": "Zürich", "unit": "f", "days": 2}
    text = "".join(d.get("content", "") for d in deltas)
    assert text == "Let me check."
    frags = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert frags[0]["function"]["name"] == "get_weather" and frags[0]["id"] == result.tool_calls[0].id
    args = "".join(f["function"].get("arguments", "") for f in frags)
    assert json.loads(args) == result.tool_calls[0].arguments


def test_unicode_arguments_pass_the_matcher(tiny_model):
    _, tok = tiny_model
    g = cf.compile_tools(TOOLS)
    text = g.render([("get_weather", {"city": "東京 Zürich", "unit": "c"})])
    body = text[len(g.trigger):]
    m = TokenMatcher(g.body_lark, tok)
    assert m.consume_many(tok.encode(body, add_special_tokens=False))
    assert m.accepting
    assert not TokenMatcher(g.body_lark, tok).consume_many(tok.encode(body.replace('"c"', '"k"'),
                                                                     add_special_tokens=False))


# ------------------------------------------------------------------------------------------- processor
class _Ban:
    def __init__(self, token):
        self.token = token

    def __call__(self, ids, scores):
        scores[:, self.token] = float("-inf")
        return scores


def _batch(tok, prompts):
    tok.padding_side = "left"
    return tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


def test_processor_batches_one_matcher_per_row(tiny_model):
    model, tok = tiny_model
    prompts = [render_prompt(tok, MSGS, TOOLS),
               render_prompt(tok, [{"role": "user", "content": "ping please, and be quick about it"}], TOOLS)]
    enc = _batch(tok, prompts)
    proc = cf.ToolCallLogitsProcessor(tok, TOOLS, tool_choice="required")
    out = model.generate(**enc, logits_processor=[proc], max_new_tokens=64, do_sample=False,
                         pad_token_id=tok.pad_token_id or tok.eos_token_id)
    replies = proc.replies(out)
    assert len(replies) == 2
    for rep in replies:
        assert rep.complete and rep.tool_calls and all(c.valid for c in rep.tool_calls)
    assert proc.mask_us_per_token > 0


def test_processor_ignores_trigger_in_history_but_honours_a_prefilled_one(tiny_model):
    model, tok = tiny_model
    history = MSGS + [
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    prompt = render_prompt(tok, history, TOOLS)
    assert TOOL_CALLS in prompt
    trigger = tok.convert_tokens_to_ids(TOOL_CALLS)
    enc = _batch(tok, [prompt])
    proc = cf.ToolCallLogitsProcessor(tok, TOOLS, tool_choice="auto")
    model.generate(**enc, logits_processor=[_Ban(trigger), proc], max_new_tokens=4, do_sample=False,
                   pad_token_id=tok.eos_token_id)
    row = proc.rows[0]
    assert row.matcher is None and row.phase == "text"  # the trigger in the history did not start a call
    assert not row.started_in_prompt

    enc = _batch(tok, [render_prompt(tok, MSGS, TOOLS) + TOOL_CALLS])
    proc = cf.ToolCallLogitsProcessor(tok, TOOLS, tool_choice="auto")
    out = model.generate(**enc, logits_processor=[proc], max_new_tokens=64, do_sample=False,
                         pad_token_id=tok.eos_token_id)
    rep = proc.replies(out)[0]
    assert proc.rows[0].started_in_prompt and rep.tool_calls and all(c.valid for c in rep.tool_calls)


def test_processor_none_bans_the_trigger(tiny_model):
    model, tok = tiny_model
    trigger = tok.convert_tokens_to_ids(TOOL_CALLS)
    enc = _batch(tok, [render_prompt(tok, MSGS, TOOLS)])
    proc = cf.ToolCallLogitsProcessor(tok, TOOLS, tool_choice="none")

    class Push:
        def __call__(self, ids, scores):
            scores[:, trigger] += 100.0
            return scores
    out = model.generate(**enc, logits_processor=[Push(), proc], max_new_tokens=6, do_sample=False,
                         pad_token_id=tok.eos_token_id)
    assert trigger not in out[0, enc.input_ids.shape[1]:].tolist()
