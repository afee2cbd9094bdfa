"""The prompt cache: reuse of the longest already-computed prefix, bounded, per model and tokenizer, and greedy
output identical with and without it."""
import copy

import pytest

import constrained_fc as cf
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
    # The whole first prompt (tools block included) is reused up to its generation prompt (`<|im_start|>
    # assistant\n`, where the reply begins); only the call and its result are prefilled.
    assert r2.stats.prompt_tokens_reused >= r1.stats.prompt_tokens - 4


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
        assert again.stats.prompt_tokens_reused >= again.stats.prompt_tokens - 4  # all but the generation prompt
