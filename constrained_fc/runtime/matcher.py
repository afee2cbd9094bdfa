"""Stage 4: the token matcher. llguidance executes the Lark grammar over token ids: the allowed-token mask
(microseconds, computed in Rust into a bitmask), consumption, the tokens the grammar forces, and rollback.
Nothing here loops over the vocabulary in Python."""
from __future__ import annotations

import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import llguidance
import llguidance.hf
import torch

from ..errors import ConstrainedFCError
from ..compiler.language import new_matcher

_LL_TOKENIZERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
# The masks of a call list's first few tokens are the slow ones: there the lexer meets every tool name at
# once (at 1,000 tools: 4.6 ms at the start, 3.8 ms after "[", 5.5 ms after '[{"name": "', against 58 µs
# for a later mask, p50). They depend only on the grammar and the tokens consumed since its start, and those
# tokens are mostly forced, so the same few states recur in every call: their masks are computed once per
# (tokenizer, vocabulary size, grammar, tokens so far) and copied.
_PREFIX_MASKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_MAX_PREFIX_MASKS = 256
_MAX_PREFIX = 16  # tokens; past this, states rarely recur


# Masks computed while the model runs its forward pass: llguidance drops the GIL inside the mask computation, so
# one worker thread overlaps it with torch (see `TokenMatcher.prefetch_mask`).
_MASK_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="constrained_fc-mask")


def ll_tokenizer(tokenizer, n_vocab: int | None = None) -> llguidance.LLTokenizer:
    """llguidance's view of a Hugging Face fast tokenizer (built once per tokenizer and vocabulary size:
    converting the vocabulary takes about a second)."""
    with _LOCK:
        per_tok = _LL_TOKENIZERS.setdefault(tokenizer, {})
        if n_vocab not in per_tok:
            try:
                per_tok[n_vocab] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab)
            except ValueError as e:
                raise ConstrainedFCError(f"llguidance needs a fast (Rust) tokenizer: {e}") from None
        return per_tok[n_vocab]


# The bitmask helpers are our own rather than llguidance.torch's (allocate_token_bitmask,
# fill_next_token_bitmask, apply_token_bitmask_inplace): importing llguidance.torch wraps its apply kernel in
# torch.compile, which loads the compiler stack: 1.1-1.7 s more per process even after transformers' model
# code (measured on 2 busy CPU cores), for helpers of a line or two. Its apply step itself: see `apply_bitmask`.
def allocate_bitmask(batch: int, n_vocab: int) -> torch.Tensor:
    return torch.full((batch, (n_vocab + 31) // 32), -1, dtype=torch.int32)


_BIT = torch.arange(32, dtype=torch.int32)


def unpack_bitmask(bitmask: torch.Tensor, vocab: int) -> torch.Tensor:
    """(batch, ceil(n/32)) int32 bitmask -> (batch, vocab) bool; ids beyond the mask are disallowed."""
    batch = bitmask.shape[0]
    bits = ((bitmask.unsqueeze(-1) >> _BIT) & 1).reshape(batch, -1).bool()
    if bits.shape[1] < vocab:
        bits = torch.nn.functional.pad(bits, (0, vocab - bits.shape[1]), value=False)
    return bits[:, :vocab]


# llguidance's apply_token_bitmask_inplace is torch.compile'd, so it needs a C++ toolchain and its first call
# in a process compiles (measured, 2 busy CPU cores, vocab 49,152: 22-24 s with a cold inductor cache,
# 2.6-3 s warm, 1.5 s more for a new batch size). Per call it is faster (batch 1: 28-55 µs vs 70-140 µs here;
# batch 8: 60-100 µs vs 600-2,200 µs), but our callers mask one row at a time, next to a forward pass of
# milliseconds, so its warm-up would be repaid only after some 30,000 tokens in one process.
# `python benchmarks/compile_speed.py --bitmask` measures both.
def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set disallowed logits to -inf in place. logits: (batch, vocab); bitmask: (batch, ceil(vocab/32)) int32."""
    allowed = unpack_bitmask(bitmask, logits.shape[1]).to(logits.device)
    logits.masked_fill_(~allowed, float("-inf"))


class TokenMatcher:
    """One grammar instance for one sequence. `grammar` is Lark text (for a ToolGrammar, pass `.body_lark`:
    the matcher starts right after the trigger)."""

    def __init__(self, grammar: str, tokenizer, *, n_vocab: int | None = None):
        self.tokenizer = tokenizer
        self.ll_tokenizer = ll_tokenizer(tokenizer, n_vocab)
        self.n_vocab = self.ll_tokenizer.vocab_size
        self.ll = new_matcher(self.ll_tokenizer, grammar)
        self.mask_seconds = 0.0
        self.mask_calls = 0
        self._grammar = grammar
        self._prefix: tuple | None = ()  # tokens consumed since the start, while short (None: stopped tracking)
        self._prefetch = None  # (future, bitmask, row) of a mask being computed in the background
        self.wait_seconds = 0.0  # time the caller blocked on masks (prefetched or not): the exposed cost
        self.waits: list[float] = []  # per mask, in seconds (for the benchmarks' percentiles)
        self._fresh: torch.Tensor | None = None  # the mask of the current state, if `done` computed it already

    def prefetch_mask(self, bitmask: torch.Tensor, row: int = 0) -> None:
        """Start computing the next mask into `bitmask[row]` in the background (call it right before the model's
        forward pass: the state is final, and torch and llguidance then run at once). The next `fill_mask` with
        the same target only waits for it; any other call on this matcher waits for it first."""
        self._join()
        if self._fresh is not None:
            return  # already known: `fill_mask` copies it
        self._prefetch = (_MASK_WORKER.submit(self._compute_in_worker, bitmask, row), bitmask, row)

    def _compute_in_worker(self, bitmask: torch.Tensor, row: int) -> None:
        # Inference mode is per thread: a bitmask made under the caller's inference_mode needs it here too.
        with torch.inference_mode(bitmask.is_inference()):
            self._compute_mask(bitmask, row)

    def _join(self) -> bool:
        """Wait for a background mask, if any; True if there was one."""
        if self._prefetch is None:
            return False
        future = self._prefetch[0]
        self._prefetch = None
        future.result()
        return True

    def take_stats(self, other: "TokenMatcher") -> None:
        """Count `other`'s mask timings as this matcher's (it replaces `other` in the same row)."""
        self.mask_seconds += other.mask_seconds
        self.mask_calls += other.mask_calls
        self.wait_seconds += other.wait_seconds
        self.waits = other.waits + self.waits

    def fill_mask(self, bitmask: torch.Tensor, row: int = 0) -> None:
        t0 = time.perf_counter()
        pending = self._prefetch
        if pending is not None and pending[1] is bitmask and pending[2] == row:
            self._join()
        elif self._fresh is not None and self._fresh.shape == bitmask[row].shape:
            self._join()
            bitmask[row].copy_(self._fresh)
        else:
            self._join()
            self._compute_mask(bitmask, row)
        waited = time.perf_counter() - t0
        self.wait_seconds += waited
        self.waits.append(waited)

    def _compute_mask(self, bitmask: torch.Tensor, row: int) -> None:
        t0 = time.perf_counter()
        v = bitmask[row]
        masks = self._prefix_masks() if self._prefix is not None else None
        key = (self.n_vocab, self._grammar, self._prefix)
        cached = masks.get(key) if masks is not None else None
        if cached is not None and cached.shape == v.shape:
            v.copy_(cached)
        else:
            self.ll.unsafe_compute_mask_ptr(v.data_ptr(), v.numel() * v.element_size())
            if masks is not None and not self.ll.is_error():
                with _LOCK:
                    masks[key] = v.clone()
                    while len(masks) > _MAX_PREFIX_MASKS:
                        masks.pop(next(iter(masks)))
        self.mask_seconds += time.perf_counter() - t0
        self.mask_calls += 1

    def _prefix_masks(self) -> dict | None:
        try:
            with _LOCK:
                return _PREFIX_MASKS.setdefault(self.tokenizer, {})
        except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
            return None

    def _track(self, tokens: list[int], ok: bool) -> None:
        self._fresh = None
        if self._prefix is not None:
            prefix = self._prefix + tuple(tokens)
            self._prefix = prefix if ok and len(prefix) <= _MAX_PREFIX else None

    def consume(self, token: int) -> bool:
        self._join()
        ok = self.ll.consume_token(int(token))
        self._track([int(token)], ok)
        return ok

    def consume_many(self, tokens) -> bool:
        tokens = [int(t) for t in tokens]
        self._join()
        ok = self.ll.consume_tokens(tokens)
        self._track(tokens, ok)
        return ok

    def try_consume(self, tokens) -> int:
        tokens = [int(t) for t in tokens]
        self._join()
        n = self.ll.try_consume_tokens(tokens)
        self._track(tokens[:n], True)
        return n

    def allows(self, tokens) -> bool:
        """Would these tokens be accepted from here? (Nothing is consumed.)"""
        tokens = [int(t) for t in tokens]
        self._join()
        return self.ll.validate_tokens(tokens) == len(tokens)

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar forces from here, split the way the tokenizer would split them."""
        self._join()
        return self.ll.compute_ff_tokens()

    def rollback(self, n: int) -> None:
        self._join()
        self._fresh = None
        if n and not self.ll.rollback(n):
            raise ConstrainedFCError(f"llguidance could not roll back {n} tokens: {self.ll.get_error()}")
        if n and self._prefix is not None:
            self._prefix = self._prefix[:-n] if n <= len(self._prefix) else None

    @property
    def done(self) -> bool:
        """The grammar is complete: nothing but end-of-sequence may follow."""
        self._join()
        return self.ll.is_stopped() or (self.ll.is_accepting() and not self._can_continue())

    def _can_continue(self) -> bool:
        # The mask computed here is the next mask if the grammar goes on: kept for `fill_mask`.
        if self._fresh is None:
            bitmask = allocate_bitmask(1, self.n_vocab)
            self._compute_mask(bitmask, 0)
            self._fresh = bitmask[0]
        allowed = unpack_bitmask(self._fresh.unsqueeze(0), self.n_vocab)[0]
        allowed[list(self.ll_tokenizer.eos_tokens)] = False
        return bool(allowed.any())

    @property
    def accepting(self) -> bool:
        self._join()
        return self.ll.is_accepting()

    @property
    def error(self) -> str | None:
        self._join()
        return self.ll.get_error() if self.ll.is_error() else None

    @property
    def mask_us_per_token(self) -> float:
        return 1e6 * self.mask_seconds / self.mask_calls if self.mask_calls else 0.0
