"""The chat format: ChatML (SmolLM2) turns extended with Mistral's function-calling tokens.

Shared with the fine-tuning package, so a model is trained on exactly the prompts it is later run on:

    <|im_start|>user\\n[AVAILABLE_TOOLS][{"type": "function", "function": {...}}][/AVAILABLE_TOOLS]What is ...<|im_end|>
    <|im_start|>assistant\\nLet me check.[TOOL_CALLS][{"name": "f", "arguments": {"x": 1}}]<|im_end|>
    <|im_start|>tool\\n[TOOL_RESULTS]{"call_id": "call_...", "content": "..."}[/TOOL_RESULTS]<|im_end|>

A conversation without tools renders byte-identically to SmolLM2-Instruct's own template (default system
prompt included), so plain chat behaves exactly as the original model expects.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping, Sequence

from .errors import ConstrainedFCError
from .compiler.formats import DEFAULT_FORMAT, detect_format
from .compiler.tools import new_call_id

AVAILABLE_TOOLS = "[AVAILABLE_TOOLS]"
END_AVAILABLE_TOOLS = "[/AVAILABLE_TOOLS]"
TOOL_CALLS = "[TOOL_CALLS]"
TOOL_RESULTS = "[TOOL_RESULTS]"
END_TOOL_RESULTS = "[/TOOL_RESULTS]"
FC_TOKENS = (AVAILABLE_TOOLS, END_AVAILABLE_TOOLS, TOOL_CALLS, TOOL_RESULTS, END_TOOL_RESULTS)

GENERATION_PROMPT = "<|im_start|>assistant\n"
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Everything is emitted through {{- '...' -}} expressions with whitespace control on every tag, so the
# template's own layout never leaks into the prompt. JSON is built by hand around `tojson` because
# transformers renders in an immutable sandbox (no list.append); `tojson` there is json.dumps with its
# default ", " / ": " separators, unsorted keys and ensure_ascii=False, which `render_prompt` relies on.
# The plain-turn branch and the default system prompt are SmolLM2-Instruct's template, unchanged.
#
# The tools block sits in the FIRST user message, so a conversation's next turn only appends to the prompt of
# the last one and the prompt cache serves all of it (`benchmarks/followup.py` measures this layout against
# Mistral's, the block in the last user message; single-turn prompts are the same in both).
_TEMPLATE = r"""{#- constrained_fc chat template: ChatML, the tools block in the @WHICH@ user message -#}
{%- set ns = namespace(tools_at=-1) -%}
{%- for message in messages -%}
    {%- if message['role'] == 'user' @ONLY_FIRST@-%}{%- set ns.tools_at = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- if tools and ns.tools_at < 0 -%}
    {{- raise_exception('tools are listed inside the @WHICH@ user message, but the conversation has no user message') -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if loop.first and messages[0]['role'] != 'system' -%}
        {{- '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' -}}
    {%- endif -%}
    {%- if message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] -%}
        {{- '<|im_start|>assistant\n' -}}
        {%- if message['content'] -%}{{- message['content'] -}}{%- endif -%}
        {{- '[TOOL_CALLS][' -}}
        {%- for call in message['tool_calls'] -%}
            {%- set fn = call['function'] if call['function'] is defined else call -%}
            {%- if not loop.first -%}{{- ', ' -}}{%- endif -%}
            {{- '{"name": ' + fn['name']|tojson + ', "arguments": ' -}}
            {%- if fn['arguments'] is string -%}
                {{- fn['arguments'] -}}
            {%- elif fn['arguments'] is defined and fn['arguments'] is not none -%}
                {{- fn['arguments']|tojson -}}
            {%- else -%}
                {{- '{}' -}}
            {%- endif -%}
            {{- '}' -}}
        {%- endfor -%}
        {{- ']<|im_end|>\n' -}}
    {%- elif message['role'] == 'tool' -%}
        {{- '<|im_start|>tool\n[TOOL_RESULTS]{"call_id": ' -}}
        {{- (message['tool_call_id'] if message['tool_call_id'] is defined else none)|tojson -}}
        {{- ', "content": ' + message['content']|tojson + '}[/TOOL_RESULTS]<|im_end|>\n' -}}
    {%- elif message['role'] == 'user' and tools and loop.index0 == ns.tools_at -%}
        {{- '<|im_start|>user\n[AVAILABLE_TOOLS][' -}}
        {%- for tool in tools -%}
            {%- if not loop.first -%}{{- ', ' -}}{%- endif -%}
            {%- if tool['function'] is defined -%}
                {{- tool|tojson -}}
            {%- else -%}
                {{- '{"type": "function", "function": ' + tool|tojson + '}' -}}
            {%- endif -%}
        {%- endfor -%}
        {{- '][/AVAILABLE_TOOLS]' + message['content'] + '<|im_end|>\n' -}}
    {%- else -%}
        {{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>' + '\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}"""
TOOLS_IN = ("first", "last")
CHAT_TOOLS_IN = "first"  # where `CHAT_TEMPLATE` lists the tools (a training run records its own: `tools_in`)


def chat_template(tools_in: str = CHAT_TOOLS_IN) -> str:
    """Our chat template with the tools block in the first user message (the default, `CHAT_TEMPLATE`) or in
    the last ("last": Mistral's layout, which the shipped adapter's multi-turn training data used)."""
    if tools_in not in TOOLS_IN:
        raise ConstrainedFCError(f"tools_in must be one of {TOOLS_IN}, got {tools_in!r}")
    return _TEMPLATE.replace("@WHICH@", tools_in).replace(
        "@ONLY_FIRST@", "and ns.tools_at < 0 " if tools_in == "first" else "")


CHAT_TEMPLATE = chat_template(CHAT_TOOLS_IN)


def tools_message_index(messages, tools_in: str = CHAT_TOOLS_IN) -> int:
    """The position of the message `chat_template(tools_in)` lists the tools in (the first or the last user
    message); -1 when there is no user message."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    return (users[0] if tools_in == "first" else users[-1]) if users else -1

_ROLES = ("system", "user", "assistant", "tool")
# Roles other formats use for the same turns.
_ROLE_ALIASES = {"function": "tool", "ipython": "tool"}


class ChatFormatError(ConstrainedFCError):
    """A chat message is malformed. `index` is the message's position in the list given (None when the
    problem is not one message's)."""

    def __init__(self, message: str, *, index: int | None = None):
        self.index = index
        self.reason = message
        super().__init__(message if index is None else f"message #{index}: {message}")


def _text(content: Any, index: int, role: str) -> str:
    """Message content as one string; OpenAI's list-of-parts form is joined when every part is text."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise ChatFormatError(f"{role} content part #{j} is not a text part", index=index)
        return "".join(parts)
    raise ChatFormatError(f"{role} content must be a string, got {type(content).__name__}", index=index)


def _decode_arguments(raw: Any, index: int, name: str) -> dict:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ChatFormatError(f"arguments of call to {name!r} are not valid JSON: {e}", index=index) from None
    if not isinstance(raw, Mapping):
        raise ChatFormatError(f"arguments of call to {name!r} must be a JSON object, got {type(raw).__name__}",
                              index=index)
    return dict(raw)


def _normalize_call(raw: Any, index: int, position: int) -> dict:
    if not isinstance(raw, Mapping):
        raise ChatFormatError(f"tool call #{position} must be an object, got {type(raw).__name__}", index=index)
    # OpenAI nests name/arguments under "function"; Mistral's examples put them on the call itself.
    fn = raw.get("function") if isinstance(raw.get("function"), Mapping) else raw
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ChatFormatError(f"tool call #{position} has no function name", index=index)
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = new_call_id()
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": _decode_arguments(fn.get("arguments"), index, name)}}


def normalize_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Messages in OpenAI or legacy Mistral-example shape -> OpenAI shape with decoded arguments.

    Every tool call gets an `id` and a dict of `arguments`; every tool result gets the `tool_call_id` of the
    call it answers (given, else the pending call of the same name, else the next pending call in order).
    Keys this function does not know (a training weight, say) are kept. Raises `ChatFormatError` naming the
    message index and the problem.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise ChatFormatError(f"messages must be a list of message objects, got {type(messages).__name__}")
    out: list[dict] = []
    pending: list[dict] = []  # calls of the latest assistant turn that no result has answered yet
    known: set[str] = set()  # the ids of every call made so far
    for i, raw in enumerate(messages):
        if not isinstance(raw, Mapping):
            raise ChatFormatError(f"must be an object with a 'role', got {type(raw).__name__}", index=i)
        role = raw.get("role")
        role = _ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        if role not in _ROLES:
            raise ChatFormatError(f"unknown role {raw.get('role')!r} (expected one of {', '.join(_ROLES)})",
                                  index=i)
        msg = dict(raw)
        msg["role"] = role
        if role in ("system", "user"):
            msg["content"] = _text(raw.get("content"), i, role)
        elif role == "assistant":
            msg.pop("function_call", None)
            msg.pop("tool_calls", None)
            msg.update(_normalize_assistant(raw, i))
            if msg.get("tool_calls"):
                pending = [{"id": c["id"], "name": c["function"]["name"]} for c in msg["tool_calls"]]
                known.update(c["id"] for c in msg["tool_calls"])
        else:
            msg.update(_normalize_result(raw, i, pending, known))
        out.append(msg)
    if not out:
        raise ChatFormatError("messages is empty: a conversation needs at least one user message")
    return out


def _normalize_assistant(raw: Mapping, i: int) -> dict:
    calls_raw = raw.get("tool_calls")
    legacy = raw.get("function_call")
    if calls_raw is not None and legacy is not None:
        raise ChatFormatError("has both 'tool_calls' and 'function_call'", index=i)
    if legacy is not None:
        calls_raw = [legacy]
    if calls_raw is not None and (isinstance(calls_raw, (str, bytes, Mapping)) or not isinstance(calls_raw, Sequence)):
        raise ChatFormatError(f"tool_calls must be a list, got {type(calls_raw).__name__}", index=i)
    calls = [_normalize_call(c, i, j) for j, c in enumerate(calls_raw or ())]
    content = raw.get("content")
    if content is None and not calls:
        raise ChatFormatError("assistant message has neither content nor tool calls", index=i)
    out: dict = {"content": None if content is None else _text(content, i, "assistant")}
    if calls:
        out["tool_calls"] = calls
    return out


def _normalize_result(raw: Mapping, i: int, pending: list[dict], known: set[str]) -> dict:
    content = raw.get("content")
    if content is None:
        raise ChatFormatError("tool result has no content", index=i)
    # A result may be any JSON value; OpenAI's list of text parts is the one shape that means a string.
    if isinstance(content, list) and content and all(isinstance(p, Mapping) and p.get("type") == "text"
                                                      for p in content):
        content = _text(content, i, "tool")
    if not isinstance(content, str):
        try:
            json.dumps(content)
        except (TypeError, ValueError) as e:
            raise ChatFormatError(f"tool result content is not JSON-serialisable: {e}", index=i) from None
    name = raw.get("name")
    call_id = raw.get("tool_call_id")
    if call_id is not None and (not isinstance(call_id, str) or not call_id):
        raise ChatFormatError(f"tool_call_id must be a non-empty string, got {call_id!r}", index=i)
    if call_id is not None:
        if call_id not in known:
            # As the OpenAI API does: a result must answer a call the conversation made.
            raise ChatFormatError(f"tool_call_id {call_id!r} matches no earlier tool call", index=i)
        match = next((c for c in pending if c["id"] == call_id), None)
    else:
        match = next((c for c in pending if name is not None and c["name"] == name), None)
        if match is None and pending:
            match = pending[0]
        if match is None:
            where = f" for {name!r}" if name else ""
            raise ChatFormatError(f"tool result{where} has no tool_call_id and no unanswered tool call before it "
                                  "to link to", index=i)
        call_id = match["id"]
    if match is not None:
        pending.remove(match)
        name = name if isinstance(name, str) and name else match["name"]
    out = {"tool_call_id": call_id, "content": content}
    if isinstance(name, str) and name:
        out["name"] = name
    return out


def normalize_tools_for_prompt(tools: Any) -> list[dict] | None:
    """Tools in any form `constrained_fc.compiler.tools` accepts -> OpenAI form, exactly as the decoder renders them."""
    if tools is None:
        return None
    from .compiler.tools import normalize_tools
    out = [t.to_openai() for t in normalize_tools(tools)]
    return out or None


def _template_of(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, Mapping):  # named templates: the default one, else any that mentions tools
        template = template.get("tool_use") or template.get("default") or next(iter(template.values()), None)
    return template if isinstance(template, str) else None


def uses_native_tool_format(tokenizer) -> str | None:
    """The name of the call format the tokenizer's chat template writes (e.g. "hermes" for a Hermes/Qwen
    `<tool_call>` template), when it is one of the registered formats other than ours; else None."""
    fmt = detect_format(_template_of(tokenizer))
    return fmt.name if fmt is not None and fmt.name != DEFAULT_FORMAT else None


def _is_ours(template: str | None) -> bool:
    # This template or an earlier version of it: a model folder saved by us (the model cache, a fine-tuning
    # run) keeps the tokenizer's template of its day, which is then replaced by today's.
    return bool(template) and r"<|im_start|>user\n[AVAILABLE_TOOLS][" in template


def uses_our_template(tokenizer) -> bool:
    """Does the tokenizer render with our chat template (rather than a model family's own)?"""
    return _is_ours(_template_of(tokenizer))


def tools_layout(tokenizer) -> str | None:
    """Where the tokenizer's template lists the tools ("first" / "last" user message) when it is ours, else
    None. Our templates from before the layout was named listed them in the last."""
    template = _template_of(tokenizer)
    if not _is_ours(template):
        return None
    named = re.search(r"the tools block in the (first|last) user message", template)
    return named.group(1) if named else "last"


def _handles_tools_natively(template: str | None) -> bool:
    # A Mistral template already speaks our format; a Hermes one speaks its own, which the decoder follows.
    return detect_format(template) is not None


def add_function_calling_tokens(tokenizer, model=None) -> int:
    """Make each function-calling token one special token id, install `CHAT_TEMPLATE` (unless the tokenizer's
    template handles tools natively), and grow `model`'s embeddings to match. Returns the number of tokens
    added to the vocabulary; calling it again adds none."""
    from tokenizers import AddedToken

    added_tokens = set(tokenizer.get_added_vocab())
    # A token the vocabulary already has as plain BPE text would still be split by the pre-tokenizer unless it
    # is registered as an added token, so those are registered too (without growing the vocabulary).
    missing = [t for t in FC_TOKENS if t not in added_tokens]
    before = len(tokenizer)
    if missing:
        tokenizer.add_special_tokens(
            {"extra_special_tokens": [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False)
                                      for t in missing]},
            replace_extra_special_tokens=False)
    added = len(tokenizer) - before
    for token in FC_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        # Some SentencePiece tokenizers prepend a space piece to any text, so only ask that the id is in there.
        if token_id is None or token_id == tokenizer.unk_token_id or \
                token_id not in tokenizer.encode(token, add_special_tokens=False):
            raise ConstrainedFCError(f"this tokenizer cannot keep {token!r} as one token even after adding it")
    template = _template_of(tokenizer)
    if _is_ours(template) or not _handles_tools_natively(template):
        tokenizer.chat_template = CHAT_TEMPLATE
    if model is not None:
        rows = model.get_input_embeddings().weight.shape[0]
        if rows < len(tokenizer):
            # Mean-initialised rows keep the new tokens' logits ordinary instead of random until fine-tuned.
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return added


def render_prompt(tokenizer, messages, tools=None, *, add_generation_prompt: bool = True) -> str:
    """The prompt text for `messages` (any shape `normalize_messages` accepts) and `tools` (any form
    `constrained_fc.compiler.tools.normalize_tools` accepts), rendered with the tokenizer's template, or with
    `CHAT_TEMPLATE` when it has none."""
    msgs = normalize_messages(messages)
    tools_oa = normalize_tools_for_prompt(tools)
    template = _template_of(tokenizer)
    kwargs = {} if template else {"chat_template": CHAT_TEMPLATE}
    try:
        return tokenizer.apply_chat_template(msgs, tools=tools_oa, add_generation_prompt=add_generation_prompt,
                                             tokenize=False, **kwargs)
    except Exception as e:  # jinja2 errors (raise_exception included) carry the template's own message
        if type(e).__module__.startswith("jinja2"):
            raise ChatFormatError(f"chat template failed: {e}") from None
        raise


# Content (messages, tool results, tool descriptions and schemas) is data, never markup: text such as
# "<|im_end|>" or "[TOOL_CALLS]" inside it must be tokenised as the characters it is, or a user message or a
# tool result could forge a turn or trigger a call (prompt injection). The template's own control tokens are
# tokenised normally. Occurrences inside content are swapped for private-use sentinels before rendering (they
# pass through the template and `tojson` unchanged), and each sentinel is then tokenised with
# `split_special_tokens=True`. Content without control-token text takes the one-call path, so its ids are
# exactly those of tokenising the rendered prompt.
_SENTINEL = re.compile("\ue000(\\d+)\ue001")


def _control_strings(tokenizer) -> list[str]:
    """Every text the tokenizer matches as one added token, longest first."""
    return sorted(tokenizer.get_added_vocab(), key=len, reverse=True)


def _escape_controls(value: Any, pattern: "re.Pattern[str]", index: dict[str, int]) -> tuple[Any, bool]:
    """`value` with every control-token text inside its strings (and keys) replaced by a sentinel."""
    if isinstance(value, str):
        if not pattern.search(value):
            return value, False
        return pattern.sub(lambda m: f"\ue000{index[m.group(0)]}\ue001", value), True
    if isinstance(value, Mapping):
        out, hit = {}, False
        for k, v in value.items():
            k2, h1 = _escape_controls(k, pattern, index) if isinstance(k, str) else (k, False)
            v2, h2 = _escape_controls(v, pattern, index)
            out[k2] = v2
            hit = hit or h1 or h2
        return out, hit
    if isinstance(value, (list, tuple)):
        items = [_escape_controls(v, pattern, index) for v in value]
        return [v for v, _ in items], any(h for _, h in items)
    return value, False


def encode_prompt(tokenizer, messages, tools=None, *, add_generation_prompt: bool = True) -> list[int]:
    """The prompt's token ids: `render_prompt`'s text, with content never tokenised as control tokens (see
    above). This is what every decoding path feeds the model."""
    msgs = normalize_messages(messages)
    tools_oa = normalize_tools_for_prompt(tools)
    controls = _control_strings(tokenizer)
    if controls:
        pattern = re.compile("|".join(re.escape(c) for c in controls))
        index = {c: i for i, c in enumerate(controls)}
        safe = [dict(m, role=m["role"]) for m in msgs]
        hit = False
        for m in safe:
            for key in list(m):
                if key != "role":
                    m[key], h = _escape_controls(m[key], pattern, index)
                    hit = hit or h
        safe_tools, h = _escape_controls(tools_oa, pattern, index)
        if hit or h:
            text = render_prompt(tokenizer, safe, safe_tools, add_generation_prompt=add_generation_prompt)
            ids: list[int] = []
            pos = 0
            for m in _SENTINEL.finditer(text):
                if m.start() > pos:
                    ids += tokenizer.encode(text[pos:m.start()], add_special_tokens=False)
                ids += tokenizer.encode(controls[int(m.group(1))], add_special_tokens=False,
                                        split_special_tokens=True)
                pos = m.end()
            if pos < len(text):
                ids += tokenizer.encode(text[pos:], add_special_tokens=False)
            return ids
    text = render_prompt(tokenizer, msgs, tools_oa, add_generation_prompt=add_generation_prompt)
    return tokenizer.encode(text, add_special_tokens=False)
