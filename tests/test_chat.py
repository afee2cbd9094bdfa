"""The chat format: template rendering, message normalisation, and the function-calling tokens."""
import copy
import json
import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from constrained_fc.chat import (AVAILABLE_TOOLS, CHAT_TEMPLATE, END_AVAILABLE_TOOLS, END_TOOL_RESULTS, FC_TOKENS,
                                 TOOL_CALLS, TOOL_RESULTS, ChatFormatError, add_function_calling_tokens,
                                 normalize_messages, render_prompt, tools_message_index, uses_native_tool_format)
from constrained_fc.errors import ConstrainedFCError

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"

WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                           "unit": {"enum": ["C", "F"]}},
                          "required": ["city"]}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Time in a timezone",
                                          "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def raw_tokenizer():
    """The tokenizer exactly as the GGUF describes it: original SmolLM2 template, no function-calling tokens.
    Tests that change it work on a deepcopy."""
    from transformers import AutoTokenizer

    from constrained_fc.model import gguf_path
    source = gguf_path()
    return AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)


@pytest.fixture(scope="module")
def tok(tiny_model):
    return tiny_model[1]


def openai_tools(*tools):
    return [t if "function" in t else {"type": "function", "function": t} for t in tools]


PLAIN_CHATS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello. How can I help?"},
     {"role": "user", "content": "Tell me about\nParis, é ü 東京 {\"json\": 1}"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "  spaces  "},
     {"role": "assistant", "content": "ok"}],
]


# ------------------------------------------------------------------------------------------------------ plain chat
@pytest.mark.parametrize("chat", PLAIN_CHATS)
@pytest.mark.parametrize("gen", [True, False])
def test_plain_chat_is_byte_identical_to_smollm2_template(raw_tokenizer, tok, chat, gen):
    original = raw_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
    assert "<tool_call>" not in raw_tokenizer.chat_template and TOOL_CALLS not in raw_tokenizer.chat_template
    assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen) == original
    assert render_prompt(tok, chat, add_generation_prompt=gen) == original


def test_default_system_prompt_kept_as_smollm2_does(tok):
    text = render_prompt(tok, [{"role": "user", "content": "Hi"}])
    assert text == SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    text = render_prompt(tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
                         add_generation_prompt=False)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


# ----------------------------------------------------------------------------------------------------- tools block
def test_tools_block_opens_the_first_user_message_only(tok):
    msgs = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "weather in Paris?"}]
    text = render_prompt(tok, msgs, [WEATHER, TIME])
    block = AVAILABLE_TOOLS + json.dumps(openai_tools(WEATHER, TIME), ensure_ascii=False) + END_AVAILABLE_TOOLS
    assert text == (SYSTEM + f"<|im_start|>user\n{block}first<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
                    "<|im_start|>user\nweather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert text.count(AVAILABLE_TOOLS) == 1
    # So the next turn's prompt starts with this turn's whole prompt (what the prompt cache reuses).
    assert text.startswith(render_prompt(tok, msgs[:1], [WEATHER, TIME]))
    assert tools_message_index(msgs) == 0 and tools_message_index([{"role": "system", "content": "s"}] + msgs) == 1
    # Canonical JSON: json.dumps' default separators, keys in the given order.
    assert '{"type": "function", "function": {"name": "get_weather", "description": ' in text


def test_the_mistral_layout_puts_the_tools_block_in_the_last_user_message(tok):
    from constrained_fc.chat import chat_template
    msgs = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "weather in Paris?"}]
    block = AVAILABLE_TOOLS + json.dumps(openai_tools(WEATHER), ensure_ascii=False) + END_AVAILABLE_TOOLS
    text = tok.apply_chat_template(msgs, tools=openai_tools(WEATHER), tokenize=False, add_generation_prompt=True,
                                   chat_template=chat_template("last"))
    assert text == (SYSTEM + "<|im_start|>user\nfirst<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
                    f"<|im_start|>user\n{block}weather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    # A single-turn prompt is the same in both layouts.
    one = msgs[:1]
    assert tok.apply_chat_template(one, tools=openai_tools(WEATHER), tokenize=False, add_generation_prompt=True,
                                   chat_template=chat_template("last")) == render_prompt(tok, one, [WEATHER])
    with pytest.raises(ConstrainedFCError, match="tools_in"):
        chat_template("middle")


def test_a_tokenizer_saved_with_an_earlier_version_of_our_template_gets_todays(tok):
    """A model folder we saved (the model cache, a fine-tuning run) keeps the template of its day; loading it
    installs today's. A template of another family that speaks our call format is left alone."""
    from constrained_fc.chat import chat_template
    old = copy.deepcopy(tok)
    old.chat_template = chat_template("last").replace("constrained_fc chat template", "an older one")
    add_function_calling_tokens(old)
    assert old.chat_template == CHAT_TEMPLATE
    other = copy.deepcopy(tok)
    other.chat_template = "{{ bos_token }}{% for m in messages %}[INST]{{ m['content'] }}[/INST][TOOL_CALLS]{% endfor %}"
    add_function_calling_tokens(other)
    assert other.chat_template.startswith("{{ bos_token }}")


def test_tools_block_after_tool_results_stays_on_the_first_user_message(tok):
    msgs = [{"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "get_weather",
                                                                              "arguments": {"city": "Oslo"}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "cold"}]
    text = render_prompt(tok, msgs, [WEATHER])
    assert text.index(AVAILABLE_TOOLS) < text.index(TOOL_CALLS)
    assert text.startswith(SYSTEM + "<|im_start|>user\n" + AVAILABLE_TOOLS)


def test_bare_and_openai_tools_render_the_same(tok):
    msgs = [{"role": "user", "content": "q"}]
    assert render_prompt(tok, msgs, [WEATHER]) == render_prompt(tok, msgs, openai_tools(WEATHER))
    # The template itself also wraps a bare tool when called directly.
    direct = tok.apply_chat_template(msgs, tools=[WEATHER], tokenize=False)
    assert json.dumps(openai_tools(WEATHER)) in direct


def test_no_tools_means_no_block(tok):
    msgs = [{"role": "user", "content": "q"}]
    assert AVAILABLE_TOOLS not in render_prompt(tok, msgs, None)
    assert AVAILABLE_TOOLS not in render_prompt(tok, msgs, [])


def test_tools_without_a_user_message_is_a_clear_error(tok):
    with pytest.raises(ChatFormatError, match="no user message"):
        render_prompt(tok, [{"role": "system", "content": "s"}], [WEATHER])


# ------------------------------------------------------------------------------------------- tool calls and results
def test_tool_calls_and_results_render(tok):
    msgs = [{"role": "user", "content": "Paris and Rome?"},
            {"role": "assistant", "content": "Checking both.",
             "tool_calls": [
                 {"id": "call_a", "type": "function",
                  "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}},
                 {"id": "call_b", "type": "function",
                  "function": {"name": "get_weather", "arguments": {"city": "Róma"}}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": 'sunny, "22"'},
            {"role": "tool", "tool_call_id": "call_b", "content": {"temp": 18, "sky": "clear"}},
            {"role": "assistant", "content": "Paris 22, Rome 18."}]
    text = render_prompt(tok, msgs, add_generation_prompt=False)
    assert text == (
        SYSTEM + "<|im_start|>user\nParis and Rome?<|im_end|>\n"
        '<|im_start|>assistant\nChecking both.[TOOL_CALLS][{"name": "get_weather", "arguments": '
        '{"city": "Paris", "unit": "C"}}, {"name": "get_weather", "arguments": {"city": "Róma"}}]<|im_end|>\n'
        '<|im_start|>tool\n[TOOL_RESULTS]{"call_id": "call_a", "content": "sunny, \\"22\\""}[/TOOL_RESULTS]'
        "<|im_end|>\n"
        '<|im_start|>tool\n[TOOL_RESULTS]{"call_id": "call_b", "content": {"temp": 18, "sky": "clear"}}'
        "[/TOOL_RESULTS]<|im_end|>\n"
        "<|im_start|>assistant\nParis 22, Rome 18.<|im_end|>\n")


def test_call_without_content_or_arguments(tok):
    msgs = [{"role": "user", "content": "time?"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}]
    text = render_prompt(tok, msgs, add_generation_prompt=False)
    assert text.endswith('<|im_start|>assistant\n[TOOL_CALLS][{"name": "get_time", "arguments": {}}]<|im_end|>\n')


def test_rendered_call_is_what_the_grammar_renders_and_accepts(tok):
    from constrained_fc.compiler.tool_grammar import compile_tools
    grammar = compile_tools([WEATHER, TIME], format="mistral")
    calls = [("get_weather", {"city": "Paris", "unit": "C"}), ("get_time", {"tz": "Europe/Paris"})]
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [{"function": {"name": n, "arguments": a}} for n, a in calls]}]
    text = render_prompt(tok, msgs, add_generation_prompt=False)
    call_text = text[text.index(TOOL_CALLS):-len("<|im_end|>\n")]
    assert call_text == grammar.render(calls)
    assert grammar.accepts(call_text)


def test_legacy_mistral_shapes(tok):
    msgs = [{"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None,
             "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"role": "function", "name": "get_weather", "content": "rain"},
            {"role": "user", "content": "and Rome?"},
            {"role": "assistant", "function_call": {"name": "get_weather", "arguments": {"city": "Rome"}}},
            {"role": "tool", "name": "get_weather", "content": "sun"}]
    out = normalize_messages(msgs)
    first, second = out[1]["tool_calls"][0], out[4]["tool_calls"][0]
    assert "function_call" not in out[1]
    assert first["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert second["function"] == {"name": "get_weather", "arguments": {"city": "Rome"}}
    assert out[2] == {"role": "tool", "tool_call_id": first["id"], "name": "get_weather", "content": "rain"}
    assert out[5]["tool_call_id"] == second["id"]
    text = render_prompt(tok, out, [WEATHER])  # ids are generated once, so render the normalised messages
    assert render_prompt(tok, msgs, [WEATHER]).count(TOOL_RESULTS) == 2
    assert f'[TOOL_RESULTS]{{"call_id": "{first["id"]}", "content": "rain"}}[/TOOL_RESULTS]' in text
    assert '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}]' in text
    # Tools open the *first* user message (see CHAT_TEMPLATE), listed once.
    assert text.index(AVAILABLE_TOOLS) < text.index("weather in Paris?") < text.index("and Rome?")
    assert text.count(AVAILABLE_TOOLS) == 1


# ---------------------------------------------------------------------------------------------------- normalisation
def test_normalize_generates_ids_decodes_arguments_and_keeps_input_intact():
    msgs = [{"role": "user", "content": "q", "weight": 0},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"a": [1, 2]}'}},
                                                 {"name": "g", "arguments": {"b": None}}]}]
    before = copy.deepcopy(msgs)
    out = normalize_messages(msgs)
    assert msgs == before
    assert out[0] == {"role": "user", "content": "q", "weight": 0}  # unknown keys survive, for training data
    calls = out[1]["tool_calls"]
    assert all(re.fullmatch(r"call_[0-9a-f]{12}", c["id"]) for c in calls)
    assert calls[0]["id"] != calls[1]["id"]
    assert [c["type"] for c in calls] == ["function", "function"]
    assert calls[0]["function"] == {"name": "f", "arguments": {"a": [1, 2]}}
    assert calls[1]["function"] == {"name": "g", "arguments": {"b": None}}
    assert out[1]["content"] is None
    assert normalize_messages(out) == out  # idempotent


def test_results_link_by_name_then_by_order():
    calls = [{"id": "A", "function": {"name": "f", "arguments": {}}},
             {"id": "B", "function": {"name": "g", "arguments": {}}},
             {"id": "C", "function": {"name": "h", "arguments": {}}}]
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": calls},
            {"role": "tool", "name": "g", "content": "1"},     # by name
            {"role": "tool", "content": "2"},                  # by order: first unanswered is A
            {"role": "tool", "tool_call_id": "C", "content": "3"}]
    out = normalize_messages(msgs)
    assert [m["tool_call_id"] for m in out[2:]] == ["B", "A", "C"]
    assert [m["name"] for m in out[2:]] == ["g", "f", "h"]


def test_content_parts_are_joined():
    out = normalize_messages([{"role": "user", "content": [{"type": "text", "text": "a"},
                                                           {"type": "text", "text": "b"}]}])
    assert out[0]["content"] == "ab"


@pytest.mark.parametrize("msgs, index, pattern", [
    ([{"role": "user", "content": "q"}, {"role": "robot", "content": "x"}], 1, "unknown role 'robot'"),
    ([{"content": "q"}], 0, "unknown role None"),
    (["hello"], 0, "must be an object"),
    ([{"role": "user", "content": None}], 0, "content must be a string"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"},
      {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}], 2,
     "arguments of call to 'f' are not valid JSON"),
    ([{"role": "assistant", "function_call": {"name": "f", "arguments": "[1, 2]"}}], 0, "must be a JSON object"),
    ([{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}], 0, "no function name"),
    ([{"role": "assistant", "tool_calls": {"name": "f"}}], 0, "tool_calls must be a list"),
    ([{"role": "assistant", "content": None}], 0, "neither content nor tool calls"),
    ([{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}], 1, "no unanswered tool call"),
    ([{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": 5, "content": "r"}], 1,
     "tool_call_id must be a non-empty string"),
    ([{"role": "assistant", "tool_calls": [{"name": "f"}]}, {"role": "tool", "content": None}], 1, "no content"),
])
def test_bad_messages_name_the_index(msgs, index, pattern):
    with pytest.raises(ChatFormatError, match=re.escape(pattern)) as info:
        normalize_messages(msgs)
    assert isinstance(info.value, ValueError)
    assert info.value.index == index
    assert str(info.value).startswith(f"message #{index}: ")


def test_messages_must_be_a_list():
    with pytest.raises(ChatFormatError, match="must be a list"):
        normalize_messages({"role": "user", "content": "q"})


def test_render_prompt_reports_bad_message(tok):
    with pytest.raises(ValueError, match="message #1"):
        render_prompt(tok, [{"role": "user", "content": "q"}, {"role": "bot", "content": "x"}])


# ------------------------------------------------------------------------------------------------- special tokens
def test_each_fc_token_is_one_special_id(tok):
    ids = [tok.convert_tokens_to_ids(t) for t in FC_TOKENS]
    assert len(set(ids)) == 5 and all(i >= 49152 for i in ids)
    for token, tid in zip(FC_TOKENS, ids):
        assert tok.encode(token, add_special_tokens=False) == [tid]
        # Never split, wherever it stands in text.
        assert tid in tok.encode(f'x{token}{{"a": 1}}', add_special_tokens=False)
        assert token in tok.all_special_tokens
    assert FC_TOKENS == (AVAILABLE_TOOLS, END_AVAILABLE_TOOLS, TOOL_CALLS, TOOL_RESULTS, END_TOOL_RESULTS)


def test_prompt_tokenizes_fc_tokens_whole(tok):
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "get_time", "arguments": {}}}]},
            {"role": "tool", "tool_call_id": "c", "content": "noon"}]
    text = render_prompt(tok, msgs, [TIME])
    ids = tok.encode(text, add_special_tokens=False)
    for token in FC_TOKENS:
        assert ids.count(tok.convert_tokens_to_ids(token)) == text.count(token) == 1
    assert tok.decode(ids) == text
    assert text.endswith("<|im_start|>assistant\n")


def test_add_function_calling_tokens_is_idempotent(raw_tokenizer):
    tok = copy.deepcopy(raw_tokenizer)
    n = len(tok)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    old = model.get_input_embeddings().weight.detach().clone()
    assert add_function_calling_tokens(tok, model) == 5
    assert len(tok) == n + 5
    assert tok.chat_template == CHAT_TEMPLATE
    emb = model.get_input_embeddings().weight.detach()
    assert emb.shape[0] == n + 5 and model.config.vocab_size == n + 5
    assert torch.equal(emb[:n], old)
    assert torch.allclose(emb[n:], old.mean(0).expand(5, -1), atol=1e-3)  # new rows start at the mean
    snapshot = (tok.get_added_vocab(), emb.clone())
    assert add_function_calling_tokens(tok, model) == 0
    assert add_function_calling_tokens(tok) == 0
    assert tok.get_added_vocab() == snapshot[0]
    assert torch.equal(model.get_input_embeddings().weight.detach(), snapshot[1])
    # A model loaded later with the old vocabulary size is still grown to match.
    other = LlamaForCausalLM(LlamaConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    assert add_function_calling_tokens(tok, other) == 0
    assert other.get_input_embeddings().weight.shape[0] == n + 5


def test_hermes_template_is_left_alone(raw_tokenizer):
    tok = copy.deepcopy(raw_tokenizer)
    hermes = ("{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
              "{%- endfor %}{# calls are written <tool_call>{...}</tool_call> #}")
    tok.chat_template = hermes
    assert uses_native_tool_format(tok) == "hermes"
    assert add_function_calling_tokens(tok) == 5
    assert tok.chat_template == hermes
    assert uses_native_tool_format(tok) == "hermes"


def test_our_template_is_not_native(tok, raw_tokenizer):
    assert uses_native_tool_format(tok) is None
    assert uses_native_tool_format(raw_tokenizer) is None


def test_render_prompt_falls_back_to_chat_template(raw_tokenizer):
    tok = copy.deepcopy(raw_tokenizer)
    tok.chat_template = None
    text = render_prompt(tok, [{"role": "user", "content": "q"}], [TIME])
    assert text.startswith(SYSTEM + "<|im_start|>user\n" + AVAILABLE_TOOLS)
