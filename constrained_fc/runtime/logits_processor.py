"""Stage 5a: a transformers LogitsProcessor that constrains tool calls inside plain `model.generate()`.

Free text passes untouched; once the trigger token appears among the generated tokens, the compiled grammar
masks every following token; when the grammar is complete, end-of-sequence is forced. One `Session` per batch
row; `generate()` decides one token per step, so a forced run is forced one token at a time.

Example:
    >>> from constrained_fc import ToolCallLogitsProcessor, load_model
    >>> from constrained_fc.chat import encode_prompt
    >>> model, tok = load_model()
    >>> tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    ...     "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    >>> messages = [{"role": "user", "content": "Weather in Paris?"}]
    >>> processor = ToolCallLogitsProcessor(tok, tools)
    >>> ids = torch.tensor([encode_prompt(tok, messages, tools)])
    >>> out = model.generate(ids, logits_processor=[processor], max_new_tokens=64, do_sample=False)
    >>> processor.replies(out)[0].tool_calls  # validated ToolCall objects
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor

from ..compiler.options import UNSET, Options
from ..compiler.tool_grammar import ToolGrammar
from ..errors import ConstrainedFCError
from .matcher import allocate_bitmask
from .plan import CallPlan
from .reply import Reply, parse_generated
from .session import Session


def _force(scores_row: torch.Tensor, token: int) -> None:
    keep = scores_row[token].clone()
    scores_row.fill_(float("-inf"))
    scores_row[token] = keep if torch.isfinite(keep) else 0.0


class ToolCallLogitsProcessor(LogitsProcessor):
    """Constrain tool calls inside `model.generate(..., logits_processor=[processor])`.

    tool_choice: "auto" (constrain once the trigger token is generated), "required" (the trigger is forced
    first), a function name or OpenAI's {"type": "function", "function": {"name": ...}} (only that tool),
    "none" (the trigger is banned). One processor serves any number of `generate` calls: a call whose ids do
    not continue the previous step's starts over by itself (`reset()` does it by hand). After each call,
    `replies(sequences)` gives each row's content and validated calls."""

    def __init__(self, tokenizer, tools, *, tool_choice: Any = "auto", options: Options | None = None,
                 format: str | None = UNSET, parallel: bool = UNSET, max_calls: int | None = UNSET,
                 max_string_length: int | None = UNSET, max_array_items: int | None = UNSET,
                 whitespace: str = UNSET, strict: bool = UNSET):
        options = Options.resolve(options, format=format, parallel=parallel, max_calls=max_calls,
                                  max_string_length=max_string_length, max_array_items=max_array_items,
                                  whitespace=whitespace, strict=strict)
        self.plan = CallPlan(tokenizer, tools, tool_choice=tool_choice, options=options)
        self.reset()

    def reset(self) -> None:
        self.rows: list[Session] | None = None
        self.prompt_length = None
        self._bitmask = None
        self._last: torch.Tensor | None = None  # the ids of the previous step

    def _continues(self, input_ids: torch.Tensor) -> bool:
        """Do these ids extend the previous step's by one token? If not, a new `generate` call has begun."""
        last = self._last
        return (last is not None and input_ids.shape[0] == last.shape[0]
                and input_ids.shape[1] == last.shape[1] + 1 and torch.equal(input_ids[:, :-1], last))

    @property
    def grammar(self) -> ToolGrammar | None:
        return self.plan.grammar

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, length = input_ids.shape
        if self.rows is not None and not self._continues(input_ids):
            self.reset()  # reused for another generate() call
        if self.rows is None:
            self.prompt_length = length
            n_vocab = scores.shape[1]
            trigger = self.plan.trigger_id if self.plan.constrained else None
            # A prompt prefilled with the trigger: the call starts at the first generated token.
            self.rows = [Session(self.plan, n_vocab, started=trigger is not None and length > 0
                                 and int(input_ids[r, -1]) == trigger) for r in range(batch)]
            self._forced_last = [False] * batch
            self._bitmask = allocate_bitmask(batch, n_vocab)
        else:
            for r, (row, tok) in enumerate(zip(self.rows, input_ids[:, -1].tolist())):
                row.feed([tok], forced=self._forced_last[r])
        self._last = input_ids
        for r, row in enumerate(self.rows):
            if row.done:
                _force(scores[r], self.plan.eos_ids[0])
                self._forced_last[r] = True
                continue
            forced = row.next_forced()
            self._forced_last[r] = bool(forced)
            if forced:
                _force(scores[r], forced[0])  # the same canonical split our own loop feeds, so both agree
            else:
                row.constrain(scores[r], self._bitmask, r)
        return scores

    @property
    def mask_us_per_token(self) -> float:
        ms = [row.matcher for row in self.rows or [] if row.in_call]
        calls = sum(m.mask_calls for m in ms)
        return 1e6 * sum(m.mask_seconds for m in ms) / calls if calls else 0.0

    def replies(self, sequences) -> list[Reply]:
        """Each row's content and validated calls, from `generate`'s output ids (prompt included)."""
        if self.rows is None:
            raise ConstrainedFCError("the processor has not run yet")
        out = []
        for r, row in enumerate(self.rows):
            gen = sequences[r][self.prompt_length:]
            if self.plan.grammar is None:
                out.append(Reply(content=self.plan.tokenizer.decode(gen, skip_special_tokens=True).strip()))
                continue
            out.append(parse_generated(self.plan.tokenizer, self.plan.grammar, gen, self.plan.trigger_ids,
                                       started=row.call_from_start,
                                       consumed=row.body if row.in_call else None))
        return out
