"""Stage 5a: a transformers LogitsProcessor that constrains tool calls inside plain `model.generate()`.

Free text passes untouched; once the trigger token appears among the generated tokens, an llguidance matcher
runs the compiled grammar and masks every following token; when the grammar is complete, end-of-sequence is
forced. One matcher per batch row.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor

from ..compiler.call_scanner import CallScanner
from ..errors import ConstrainedFCError
from .matcher import allocate_bitmask, apply_bitmask
from ..compiler.options import UNSET, Options
from .plan import CallPlan
from .reply import Reply, parse_generated

def _force(scores_row: torch.Tensor, token: int) -> None:
    keep = scores_row[token].clone()
    scores_row.fill_(float("-inf"))
    scores_row[token] = keep if torch.isfinite(keep) else 0.0


class _Row:
    def __init__(self, plan: CallPlan, prompt: list[int], n_vocab: int):
        self.plan = plan
        self.n_vocab = n_vocab
        self.phase = "text"
        self.matcher = None
        self.body: list[int] = []
        self.generated = 0
        self.closing: list[int] | None = None
        self.scanner = CallScanner(plan.format)
        self.started_in_prompt = False
        if plan.constrained and plan.trigger_id is not None and prompt and prompt[-1] == plan.trigger_id:
            self.started_in_prompt = True  # the prompt was prefilled with the trigger: the call starts now
            self._start()

    def _start(self) -> None:
        self.matcher = self.plan.matcher(self.n_vocab)
        self.phase = "call"

    def advance(self, token: int) -> None:
        self.generated += 1
        if self.phase == "text":
            if token in self.plan.eos_ids:
                self.phase = "finished"
            elif token == self.plan.trigger_id and self.plan.constrained:
                self._start()
        elif self.phase == "call":
            if not self.matcher.consume(token):
                self.phase = "finished"  # cannot happen under the mask; stop rather than emit garbage
                return
            self.body.append(token)
            if self.closing is not None:
                self.closing = self.closing[1:]
                return
            self.scanner.feed(self.plan.tokenizer.decode(self.body, skip_special_tokens=False))
            if self.scanner.new_duplicate() is not None and self.plan.close_ids \
                    and self.matcher.allows(self.plan.close_ids):
                # A repeat of an earlier call: close the list now instead of letting the model loop. (It was
                # already emitted, which only our own loop can undo; `replies` drops it.)
                self.closing = list(self.plan.close_ids)

    def constrain(self, scores_row: torch.Tensor, bitmask: torch.Tensor, r: int) -> None:
        plan = self.plan
        if self.phase == "text":
            if plan.mode == "none" and plan.trigger_id is not None:
                scores_row[plan.trigger_id] = float("-inf")
            elif plan.mode in ("required", "named") and self.generated == 0 and plan.trigger_ids:
                _force(scores_row, plan.trigger_ids[0])
            return
        if self.phase == "call":
            if self.closing:
                _force(scores_row, self.closing[0])
                return
            if self.matcher.done:
                self.phase = "done"
            else:
                forced = self.matcher.forced_tokens()
                if forced:
                    # The same canonical split our own fast-forward loop feeds, so both paths agree.
                    _force(scores_row, forced[0])
                else:
                    self.matcher.fill_mask(bitmask, r)
                    apply_bitmask(scores_row.unsqueeze(0), bitmask[r:r + 1])
                return
        _force(scores_row, plan.eos_ids[0])


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
        self.rows: list[_Row] | None = None
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
            self.rows = [_Row(self.plan, input_ids[r].tolist(), n_vocab) for r in range(batch)]
            self._bitmask = allocate_bitmask(batch, n_vocab)
        else:
            last = input_ids[:, -1].tolist()
            for row, tok in zip(self.rows, last):
                row.advance(tok)
        self._last = input_ids
        for r, row in enumerate(self.rows):
            row.constrain(scores[r], self._bitmask, r)
        return scores

    @property
    def mask_us_per_token(self) -> float:
        ms = [row.matcher for row in self.rows or [] if row.matcher is not None]
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
            out.append(parse_generated(self.plan.tokenizer, self.plan.grammar, gen, self.plan.trigger_id,
                                       started=row.started_in_prompt,
                                       consumed=row.body if row.matcher is not None else None))
        return out
