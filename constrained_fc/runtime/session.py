"""Stage 5: one row's decoding state machine, the only one: every decoding path drives it token by token.

    text ──trigger──▶ call ──grammar complete, or a repeated call──▶ (closing) ──▶ done

For the next token of its row a session says whether it is forced (`next_forced`: the trigger under
tool_choice="required" or a named tool, the grammar's forced run, the closing of a list) or sampled under a
constraint (`constrain`: the grammar's mask in a call, the banned trigger under "none"), and it records what
it is fed (`feed`). Our loop (`decoding`) takes a whole forced run at once, feeds it in one forward pass, and
may roll back (`rollback=True`); the HF processor (`logits_processor`) forces one token per step and cannot
undo a token. That is the only difference between them: the trigger, tool_choice, the duplicate-call rule and
the end of the list live here once."""
from __future__ import annotations

import torch

from ..compiler.call_scanner import CallScanner
from ..errors import ConstrainedFCError
from .matcher import apply_bitmask

TEXT, CALL, CLOSING, DONE = "text", "call", "closing", "done"
# The name prior is applied only where the mask leaves this few tokens (a choice among names): it costs a
# decode of each allowed token's text, which must stay off the per-token path of free text.
MAX_PRIOR_TOKENS = 512
# Once a call list has called as many different tools as the request has asks (`plan.asks`), a call to yet
# another tool is lowered by this much more: a small model offered k tools drifts into calling a second one
# after the right call (the oracle, offered one tool, cannot). Enough to turn a drift into a repeat of a called
# tool (dropped by the duplicate rule when identical), not a mask: a model that is sure still overrules it. How
# many tools the requests of BFCL and Seal-Tools call against their asks: `benchmarks/many_tools.py`, README.
BEYOND_ASKS_LOGITS = 6.0


class Session:
    """One row of a decoding run. `plan`: a `CallPlan` (tools) or a `SchemaPlan` (a reply held to one JSON
    Schema from its first token). started: the prompt already ends with the trigger, so the call begins at the
    first generated token. rollback: the driver can take back tokens it fed (our loop), so a repeated call is
    removed rather than closed after the fact."""

    def __init__(self, plan, n_vocab: int, *, started: bool = False, rollback: bool = False):
        self.plan = plan
        self.n_vocab = n_vocab
        self.can_rollback = rollback
        self.phase = TEXT
        self.finish: str | None = None  # once done: "stop" (text, or a schema reply) | "tool_calls"
        self.tokens: list[int] = []  # every generated token, trigger included, end-of-sequence excluded
        self.forced: list[bool] = []  # parallel to `tokens`: forced rather than sampled
        self.text_ids: list[int] = []  # the free text before the trigger
        self.body: list[int] = []  # the tokens the matcher consumed (the call list after the trigger)
        self.matcher = None
        self.scanner = CallScanner(plan.call_format) if plan.call_format and plan.mode != "json" else None
        self.closing: list[int] = []  # tokens still to force to close the list (no-rollback path)
        self.duplicates_dropped = 0  # repeated calls removed (rollback) or closed off (no rollback)
        self.started_in_prompt = started
        # A reply held to a schema, a trigger already in the prompt, or a forced call in a format without a
        # trigger token (python): the call starts at the first token, so every generated token is call text.
        self.call_from_start = plan.constrained and (started or plan.mode == "json"
                                                     or (plan.mode in ("required", "named") and not plan.trigger_ids))
        if self.call_from_start:
            self._start()

    # -- what the next token must be -----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        if self.phase == CALL and self.matcher.done:
            self._end("stop" if self.plan.mode == "json" else "tool_calls")
        return self.phase == DONE

    def next_forced(self) -> list[int]:
        """The tokens that must come next, in order ([] when the next one is sampled, or the row is done)."""
        if self.phase == TEXT:
            plan = self.plan
            if plan.constrained and plan.mode in ("required", "named"):
                return plan.trigger_ids[len(self.tokens):]  # the rest of the trigger
            return []
        if self.phase == CLOSING:
            return list(self.closing)
        if self.phase == CALL and not self.done:
            return self.matcher.forced_tokens()
        return []

    def constrain(self, logits: torch.Tensor, bitmask: torch.Tensor, row: int = 0) -> None:
        """Restrict `logits` (this row's, shape (vocab,)) to the tokens that may be sampled next."""
        if self.phase == CALL:
            self.matcher.fill_mask(bitmask, row)
            apply_bitmask(logits.unsqueeze(0), bitmask[row:row + 1])
            if self.plan.name_prior and self.scanner is not None:
                self._steer_name(logits)
        elif self.phase == TEXT and self.plan.mode == "none" and self.plan.trigger_id is not None:
            logits[self.plan.trigger_id] = float("-inf")

    def prefetch(self, bitmask: torch.Tensor, row: int = 0) -> None:
        """Start computing the mask `constrain` will need, in the background: call it right before the model's
        forward pass, which then hides it (llguidance drops the GIL while it computes)."""
        if self.phase == CALL and not self.done:
            self.matcher.prefetch_mask(bitmask, row)

    def _steer_name(self, logits: torch.Tensor) -> None:
        """At a call's name, add the retrieval prior (`plan.name_prior`, 0 for the best tool of the request and
        of each of its asks, below 0 for the rest) to each allowed token: the largest prior of the names that
        token keeps possible. A tool already called in this list counts as 0, so a parallel call to it is not
        pushed away; a next call to a tool the request does not ask for is (it turns into a repeat of a called
        tool, which the duplicate rule drops, or into a parallel call the model is sure of), and so, by
        BEYOND_ASKS_LOGITS more, is any new tool once the list has called one tool per ask."""
        partial = self.scanner.open_name()
        if partial is None:
            return
        allowed = torch.isfinite(logits).nonzero().flatten()
        if not 0 < len(allowed) <= MAX_PRIOR_TOKENS:
            return
        sc = self.scanner
        called = {sc.name(c) for c in sc.calls if c.complete}
        spent = BEYOND_ASKS_LOGITS if len(called) >= self.plan.asks else 0.0
        relative = {n: 0.0 if n in called else p - spent for n, p in self.plan.name_prior.items()}
        end = "(" if sc.python else '"'
        for t in allowed.tolist():
            text = partial + self.plan.token_text(t)
            cut = text.find(end, len(partial))
            if cut >= 0:
                fits = [relative[n] for n in relative if n == text[:cut]]
            else:
                fits = [relative[n] for n in relative if n.startswith(text)]
            if fits:
                logits[t] += max(fits)

    # -- what came -----------------------------------------------------------------------------------------------
    def feed(self, tokens, *, forced: bool = False) -> None:
        """Record generated tokens (a sampled one, or a run from `next_forced`). Tokens after `done` (the
        end-of-sequence and padding a batch appends) are ignored."""
        tokens = [int(t) for t in tokens]
        while tokens and self.phase == TEXT:
            self._feed_text(tokens.pop(0), forced)
        if tokens and self.phase in (CALL, CLOSING):
            self._feed_call(tokens, forced)

    def _feed_text(self, token: int, forced: bool) -> None:
        plan = self.plan
        if token in plan.eos_ids:
            self._end("stop")
            return
        self.tokens.append(token)
        self.forced.append(forced)
        if plan.constrained and plan.trigger_ids and self.tokens[-len(plan.trigger_ids):] == plan.trigger_ids \
                and (plan.mode != "auto" or len(plan.trigger_ids) == 1):
            self._start()
        elif not (plan.constrained and plan.mode in ("required", "named")):
            self.text_ids.append(token)

    def _feed_call(self, tokens: list[int], forced: bool) -> None:
        if tokens[0] in self.plan.eos_ids and self.phase == CALL and self.matcher.accepting:
            # A complete list may go on (hermes: another block) or end; the model chose to end. End-of-turn
            # closes the list; it is not part of the call text.
            self._end("stop" if self.plan.mode == "json" else "tool_calls")
            return
        ok = self.matcher.consume(tokens[0]) if len(tokens) == 1 else self.matcher.consume_many(tokens)
        if not ok:
            raise ConstrainedFCError(f"llguidance refused token(s) {tokens}: {self.matcher.error}")
        self.body += tokens
        self.tokens += tokens
        self.forced += [forced] * len(tokens)
        if self.phase == CLOSING:
            self.closing = self.closing[len(tokens):]
            if not self.closing:
                self.phase = CALL  # the grammar now says the list is complete: `done`
            return
        if self.scanner is not None:
            self.scanner.feed(self.plan.tokenizer.decode(self.body, skip_special_tokens=False))
            dup = self.scanner.new_duplicate()
            if dup is not None:
                self._repeated(dup)

    # -- the duplicate-call rule ---------------------------------------------------------------------------------
    def _repeated(self, dup: int) -> None:
        """The model wrote a call identical to an earlier one: it is looping. With rollback the repeat is
        removed (back to just before the separator that introduced it) and the list closed; without, the list
        is closed as soon as it can be (`Reply` drops the repeat when reading back)."""
        self.duplicates_dropped += 1
        fmt = self.plan.call_format
        if not self.can_rollback:
            self._close_now()
            return
        tok, sc = self.plan.tokenizer, self.scanner
        keep_end = sc.calls[dup - 1].end
        if fmt.call_close:  # the kept call ends after its closing text (hermes: `\n</tool_call>`)
            keep_end = sc.text.index(fmt.call_close, keep_end) + len(fmt.call_close)
        j = len(self.body)
        while j > 0 and len(tok.decode(self.body[:j], skip_special_tokens=False)) > keep_end:
            j -= 1
        kept_text = tok.decode(self.body[:j], skip_special_tokens=False)
        closing = sc.text[len(kept_text):keep_end] + fmt.list_close
        removed = len(self.body) - j
        self.matcher.rollback(removed)
        del self.body[j:], self.tokens[len(self.tokens) - removed:], self.forced[len(self.forced) - removed:]
        close_ids = tok.encode(closing, add_special_tokens=False) if closing else []
        if close_ids and self.matcher.try_consume(close_ids) != len(close_ids):
            raise ConstrainedFCError(f"could not close the call list after a repeated call: {self.matcher.error}")
        self.body += close_ids
        self.tokens += close_ids
        self.forced += [True] * len(close_ids)
        sc.feed(tok.decode(self.body, skip_special_tokens=False))
        self._end("tool_calls")  # nothing more is decoded, so the driver's KV cache needs no repair

    def _close_now(self) -> None:
        """Close the list here if it can be closed here; else hold the grammar to the calls begun so far, so it
        closes the list itself when the call in progress ends. (A token can fuse a call's end with the
        separator, `},` or `),`: then a next call has begun, and it is the last.)"""
        close, sc = self.plan.close_ids, self.scanner
        if sc.between_calls:
            if close and self.matcher.allows(close):
                self.closing, self.phase = list(close), CLOSING
                return
            if not close and self.matcher.accepting:
                self._end("tool_calls")  # a list closed by end-of-sequence (hermes): the driver ends the turn
                return
        begun = len(sc.calls)
        separator = self.plan.call_format.separator.strip()
        if sc.calls[-1].complete and separator and separator in sc.text[sc.calls[-1].end:]:
            begun += 1
        bounded = self.plan.matcher(self.n_vocab, max_calls=begun)
        if bounded.try_consume(self.body) != len(self.body):
            raise ConstrainedFCError(f"could not hold the call list to {begun} calls after a repeated call: "
                                     f"{bounded.error}")
        bounded.take_stats(self.matcher)
        self.matcher = bounded

    # ------------------------------------------------------------------------------------------------------------
    def _start(self) -> None:
        self.matcher = self.plan.matcher(self.n_vocab)
        self.phase = CALL

    def _end(self, finish: str) -> None:
        self.phase, self.finish = DONE, finish

    @property
    def in_call(self) -> bool:
        return self.matcher is not None

    @property
    def mask_us_per_token(self) -> float:
        return self.matcher.mask_us_per_token if self.matcher is not None else 0.0

    @property
    def mask_wait_us_per_token(self) -> float:
        m = self.matcher
        return 1e6 * m.wait_seconds / len(m.waits) if m is not None and m.waits else 0.0
