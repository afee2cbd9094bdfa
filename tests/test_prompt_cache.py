"""The prompt cache: reuse of the longest already-computed prefix, bounded, per model and tokenizer, and greedy
output identical with and without it."""
import copy

import pytest

import constrained_fc as cf
from constrained_fc.chat import encode_prompt
from constrained_fc.runtime.decoding import prefill_segments
from constrained_fc.runtime.prompt_cache import PromptCache

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather forecast for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert an amount between currencies.",
        "parameters": {"type": "object", "properties": {"amount": {"type": "number"},
                                                        "to": {"type": "string"}}, "required": ["amount", "to"]}}}]


def _ask(q):
    return [{"role": "user", "content": q}]


def test_second_question_with_the_same_tools_reuses_the_tools_block(tiny_model):
    m, t = tiny_model
    pc = PromptCache()
    r1 = cf.generate(m, t, _ask("Weather in Paris?"), TOOLS, max_new_tokens=6, prompt_cache=pc)
    r2 = cf.generate(m, t, _ask("Weather in Rome, please?"), TOOLS, max_new_tokens=6, prompt_cache=pc)
    assert r1.stats.prompt_tokens_reused == 0
    # Everything up to the question is shared (the tools block is most of the prompt).
    assert r2.stats.prompt_tokens_reused >= 0.8 * r2.stats.prompt_tokens
    r3 = cf.generate(m, t, _ask("Weather in Rome, please?"), TOOLS, max_new_tokens=6, prompt_cache=False)
    assert r3.text == r2.text and r3.stats.prompt_tokens_reused == 0


def test_the_next_agent_step_prefills_only_what_was_appended(tiny_model):
    m, t = tiny_model
    pc = PromptCache()
    msgs = _ask("Weather in Paris?")
    r1 = cf.generate(m, t, msgs, TOOLS, max_new_tokens=4, prompt_cache=pc)
    msgs = msgs + [{"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r2 = cf.generate(m, t, msgs, TOOLS, max_new_tokens=4, prompt_cache=pc)
    # The whole first prompt (tools block included, up to the `<|im_start|>assistant\n` where the reply
    # began) is reused; only the call and its result are prefilled.
    assert r2.stats.prompt_tokens_reused == r1.stats.prompt_tokens


def test_a_conversations_next_user_turn_prefills_only_the_new_turn(tiny_model):
    m, t = tiny_model
    pc = PromptCache()
    msgs = _ask("Weather in Paris?")
    r1 = cf.generate(m, t, msgs, TOOLS, max_new_tokens=4, prompt_cache=pc)
    msgs = msgs + [{"role": "assistant", "content": "It is sunny in Paris."},
                   {"role": "user", "content": "And in Rome, in fahrenheit?"}]
    r2 = cf.generate(m, t, msgs, TOOLS, max_new_tokens=4, prompt_cache=pc)
    # The tools block sits in the first user message, so the first turn's whole prompt is the start of this one.
    assert r2.stats.prompt_tokens_reused == r1.stats.prompt_tokens
    r3 = cf.generate(m, t, msgs, TOOLS, max_new_tokens=4, prompt_cache=False)
    assert r3.text == r2.text


def test_bounded_and_never_shared_across_models(tiny_model):
    m, t = tiny_model
    pc = PromptCache(max_entries=2)
    for q in ("one?", "two?", "three?"):
        cf.generate(m, t, [{"role": "system", "content": q}, *_ask("x")], None, max_new_tokens=2, prompt_cache=pc)
    assert len(pc) == 2
    other = copy.deepcopy(m)
    r = cf.generate(other, t, [{"role": "system", "content": "three?"}, *_ask("x")], None, max_new_tokens=2,
                    prompt_cache=pc)
    assert r.stats.prompt_tokens_reused == 0
    with pytest.raises(cf.ConstrainedFCError):
        PromptCache(max_entries=0)
    with pytest.raises(cf.ConstrainedFCError):
        cf.generate(m, t, _ask("x"), None, prompt_cache="yes")


def test_an_entry_is_not_changed_by_the_generation_that_used_it(tiny_model):
    m, t = tiny_model
    pc = PromptCache()
    a = cf.generate(m, t, _ask("Weather in Paris?"), TOOLS, max_new_tokens=8, prompt_cache=pc)
    b = cf.generate(m, t, _ask("Weather in Paris?"), TOOLS, max_new_tokens=8, prompt_cache=pc)
    c = cf.generate(m, t, _ask("Weather in Paris?"), TOOLS, max_new_tokens=8, prompt_cache=pc)
    assert a.text == b.text == c.text


@pytest.mark.model
def test_greedy_output_identical_with_and_without_the_cache(smollm):
    from constrained_fc.eval.data import load_bfcl
    m, t = smollm
    pc = PromptCache()
    for case in load_bfcl("multiple", limit=4):
        plain = cf.generate(m, t, case.messages, case.functions, prompt_cache=False, max_new_tokens=64)
        first = cf.generate(m, t, case.messages, case.functions, prompt_cache=pc, max_new_tokens=64)
        again = cf.generate(m, t, case.messages, case.functions, prompt_cache=pc, max_new_tokens=64)
        assert plain.text == first.text == again.text, case.id
        assert again.stats.prompt_tokens_reused == again.stats.prompt_tokens  # the whole prompt, logits too


def _record_passes(model):
    """Hook `model` to record the length of every forward pass; returns (list, handle)."""
    lengths = []
    handle = model.register_forward_pre_hook(
        lambda mod, args, kw: lengths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    return lengths, handle


def test_prefill_cuts_where_later_prompts_share_a_prefix(tokenizer):
    t = tokenizer
    first = encode_prompt(t, _ask("Weather in Paris?"), TOOLS)
    # One cut, after the tools block: the question and the generation prompt go in one pass with it.
    cuts = prefill_segments(t, first)
    assert len(cuts) == 1 and t.decode(first[:cuts[0]]).endswith("[/AVAILABLE_TOOLS]")
    assert prefill_segments(t, encode_prompt(t, _ask("hi"), None)) == []  # no tools: one pass
    step = encode_prompt(t, _ask("Weather in Paris?") + [
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "get_weather",
                                                                         "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], TOOLS)
    # The next step cuts where the first prompt ended (the reply's header), so it can reuse all of it.
    assert step[:len(first)] == first and prefill_segments(t, step) == [cuts[0], len(first)]


def test_an_identical_prompt_runs_no_prompt_pass_and_gives_the_same_output(tiny_model):
    m, t = tiny_model
    pc = PromptCache()
    lengths, handle = _record_passes(m)
    try:
        a = cf.generate(m, t, _ask("Weather in Paris?"), TOOLS, max_new_tokens=8, prompt_cache=pc)
        cold = list(lengths)
        lengths.clear()
        b = cf.generate(m, t, _ask("Weather in Paris?"), TOOLS, max_new_tokens=8, prompt_cache=pc)
    finally:
        handle.remove()
    # Cold: the tools block, then the question with the generation prompt (two passes for the prompt).
    cut = prefill_segments(t, encode_prompt(t, _ask("Weather in Paris?"), TOOLS))[0]
    assert cold[0] == cut and cold[0] + cold[1] == a.stats.prompt_tokens
    assert b.stats.prompt_tokens_reused == b.stats.prompt_tokens
    assert b.stats.forward_passes == a.stats.forward_passes - 2 == len(lengths)
    assert a.text == b.text and a.token_ids == b.token_ids


def test_a_forced_call_start_rides_in_the_prompts_last_pass(tiny_model):
    m, t = tiny_model
    lengths, handle = _record_passes(m)
    try:
        r = cf.generate(m, t, _ask("Weather in Paris?"), TOOLS, tool_choice="required", max_new_tokens=12,
                        prompt_cache=False)
    finally:
        handle.remove()
    lead = r.forced.index(False) if False in r.forced else len(r.forced)  # the forced run before any sample
    assert lead >= 1 and t.decode(r.token_ids[:1]) == "[TOOL_CALLS]"
    assert lengths[0] + lengths[1] == r.stats.prompt_tokens + lead
    assert r.stats.forward_passes == len(lengths)
    slow = cf.generate(m, t, _ask("Weather in Paris?"), TOOLS, tool_choice="required", max_new_tokens=12,
                       prompt_cache=False, fast_forward=False)
    assert slow.token_ids == r.token_ids


def test_an_entry_is_reused_only_where_its_own_prefill_cut(tiny_model):
    import torch
    from transformers import DynamicCache
    m, t = tiny_model
    pc = PromptCache()
    cache = DynamicCache()
    cache.update(torch.zeros(1, 1, 20, 4), torch.zeros(1, 1, 20, 4), 0)
    ids = list(range(100, 120))
    pc.store(m, t, ids, cache, [10, 20], logits=torch.zeros(5))
    # Same prefix, but a caller cutting at 15 would compute 10..15 in another pass shape: reuse stops at 10.
    n, got, logits = pc.lookup(m, t, ids[:15] + [7, 7, 7], [10, 15, 18])
    assert n == 10 and got.get_seq_length() == 10 and logits is None
    n, got, logits = pc.lookup(m, t, ids, [10, 20])  # identical: served whole, with its logits
    assert n == 20 and logits is not None
    n, _, _ = pc.lookup(m, t, ids, [20])  # identical ids, but this caller prefills them in one pass
    assert n == 0


def test_the_stored_logits_are_not_the_masked_ones(tiny_model):
    # tool_choice="none" bans the trigger in the first step's logits, in place; a later "auto" request with
    # the same prompt must get the model's own logits back, trigger included.
    import torch
    m, t = tiny_model
    pc = PromptCache()
    ids = encode_prompt(t, _ask("Weather in Paris?"), TOOLS)
    for _ in range(2):  # a fresh prefill, then a whole-prompt hit (its logits are masked as well)
        cf.generate(m, t, _ask("Weather in Paris?"), TOOLS, tool_choice="none", max_new_tokens=2, prompt_cache=pc)
        n, _, logits = pc.lookup(m, t, ids, prefill_segments(t, ids) + [len(ids)])
        assert n == len(ids) and torch.isfinite(logits).all()
