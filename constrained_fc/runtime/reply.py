"""Stage 5b: a generated reply -> free-text content plus parsed, validated, de-duplicated tool calls."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import GrammarMismatchError
from ..compiler.tool_grammar import ToolGrammar
from ..compiler.tools import ToolCall


@dataclass
class Reply:
    content: str
    tool_calls: list = field(default_factory=list)  # list[ToolCall]
    complete: bool = True  # False: a call list was started but not finished (cut by max_new_tokens)
    duplicates_dropped: int = 0


def dedupe(calls: list[ToolCall]) -> tuple[list[ToolCall], int]:
    """Drop calls identical (same name and arguments) to an earlier one in the same turn."""
    seen, out = set(), []
    for c in calls:
        key = (c.name, json.dumps(c.arguments, sort_keys=True))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out, len(calls) - len(out)


def parse_body(grammar: ToolGrammar, content: str, body: str, *, trusted: bool = False) -> Reply:
    """`body` is the text after the trigger. Text the grammar does not accept (a call cut short) gives no
    calls: a half call is never presented as valid. trusted: the body is exactly what the token matcher
    accepted, so it is read without checking it against the grammar again (see `ToolGrammar.parse`)."""
    try:
        calls = grammar.parse(grammar.trigger + body, trusted=trusted)
    except GrammarMismatchError:
        return Reply(content=content, tool_calls=[], complete=False)
    calls, dropped = dedupe(calls)
    return Reply(content=content, tool_calls=calls, duplicates_dropped=dropped)


def parse_generated(tokenizer, grammar: ToolGrammar, generated_ids, trigger: "int | list[int] | None",
                    started: bool = False, consumed=None) -> Reply:
    """Split generated token ids at the trigger (its token id, or the ids of a trigger several tokens long,
    which the session forces in that one spelling) or take all of them as the call body when `started`, i.e.
    the trigger was in the prompt, and parse. End-of-sequence and padding are ignored. `consumed`: the ids the
    token matcher accepted; a body of exactly those ids is read without a second grammar check."""
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    ids = _strip(generated_ids, stop)
    trigger = [trigger] if isinstance(trigger, int) else list(trigger or [])
    pos = -1 if started else _find(ids, trigger)
    if pos is None:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        return Reply(content=text.strip())
    content = tokenizer.decode(ids[:pos], skip_special_tokens=True).strip() if pos > 0 else ""
    after = pos + len(trigger) if pos >= 0 else 0
    body = tokenizer.decode(ids[after:], skip_special_tokens=False)
    # The ids handed in need not be the ones the processor saw (any sequences can be passed), hence the compare.
    trusted = consumed is not None and ids[after:] == _strip(consumed, stop)
    return parse_body(grammar, content, body, trusted=trusted)


def _find(ids: list[int], needle: list[int]) -> int | None:
    """Index of the first occurrence of `needle` in `ids` (None if absent or empty)."""
    if not needle:
        return None
    first = needle[0]
    for i, t in enumerate(ids):
        if t == first and ids[i:i + len(needle)] == needle:
            return i
    return None


def _strip(ids, stop: set) -> list[int]:
    ids = [int(t) for t in ids]
    while ids and ids[-1] in stop:
        ids.pop()
    return ids
