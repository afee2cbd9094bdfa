"""The prompt cache: the KV cache of token sequences this process has already run through a model, so the next
request only prefills what is new. A second question with the same tools starts after the tools block; an
agent's next step, or a conversation's next turn, only prefills what was appended.

Entries are keyed by the model and tokenizer objects (a different model or tokenizer never shares an entry)
and hold the exact ids that were fed, where the passes that computed them ended, and the next-token logits
after the last; a lookup finds the longest prefix of the new prompt an entry can serve (cut only where both
prefills cut) and hands back a private copy cut to it, so the stored entry is never changed by the generation
that uses it. An identical prompt is served whole, logits included: no forward pass at all.
Bounded: `max_entries` sequences (least recently used dropped first).

Changing a model's weights in place (training it) does not change its identity: call `clear()` then.
"""
from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_MAX_ENTRIES = 4


@dataclass
class _Entry:
    cache: object  # a DynamicCache holding the KV of the entry's ids (up to its last end)
    ends: tuple[int, ...]  # where the passes that computed it ended, ascending: the only points it can be cut
    logits: object = None  # the next-token logits after all of the ids, when the last pass ended there


class PromptCache:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES):
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            from ..errors import ConstrainedFCError
            raise ConstrainedFCError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()  # (model id, tokenizer id, model ref, ids tuple) -> _Entry
        self._lock = threading.Lock()

    @staticmethod
    def _owner(model, tokenizer) -> tuple:
        return (id(model), id(tokenizer))

    def lookup(self, model, tokenizer, ids: list[int], ends: list[int]):
        """(n, cache, logits): the first n `ids` have their KV in `cache` (a private DynamicCache), and when
        n == len(ids) `logits` are the next-token logits after them (else None); (0, None, None) on a miss.

        `ends` are where the caller's own prefill of `ids` would end its passes (ascending, len(ids) last). An
        entry is reused only up to a point where both it and the caller cut, with the same cuts before it: the
        reused KV is then exactly what the caller's own prefill would compute, so greedy output does not
        depend on what the cache held."""
        owner = self._owner(model, tokenizer)
        best, best_key = 0, None
        with self._lock:
            for key, entry in self._entries.items():
                if key[:2] != owner or key[2]() is not model:
                    continue
                n = _reuse_point(key[3], entry, ids, ends)
                if n > best:
                    best, best_key = n, key
            if best_key is None:
                return 0, None, None
            self._entries.move_to_end(best_key)
            entry = self._entries[best_key]
            cache = _prefix_copy(entry.cache, best)
            logits = entry.logits.clone() if best == len(ids) else None
        return best, cache, logits

    def store(self, model, tokenizer, ids: list[int], cache, ends: list[int], logits=None) -> None:
        """Keep `cache`, whose first positions hold the KV of `ids`, computed by prompt-only passes ending at
        `ends` (later positions are dropped), for later lookups; `logits`: the next-token logits after all of
        `ids`, when the last of `ends` is len(ids). The caller gives `cache` and `logits` up."""
        ends = tuple(e for e in ends if 0 < e <= len(ids))
        if not ends or cache is None or cache.get_seq_length() < ends[-1]:
            return
        extra = cache.get_seq_length() - ends[-1]
        if extra:
            cache.crop(-extra)  # keep exactly what the passes computed (a negative count trims the end)
        if ends[-1] != len(ids):
            logits = None  # the last pass ran past the prompt (a forced run fed with it): no logits after it
        ids = tuple(ids[:ends[-1]])
        entry = _Entry(cache, ends, logits)  # the caller gives `logits` up too
        key = (*self._owner(model, tokenizer), weakref.ref(model), ids)
        with self._lock:
            # A stored entry this one extends is redundant when every point it can be cut at, this one has
            # (and it holds no logits this one lacks).
            for k in [k for k, e in self._entries.items() if k[:2] == key[:2] and _redundant(k[3], e, ids, entry)]:
                del self._entries[k]
            self._entries[key] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _reuse_point(stored: tuple, entry: _Entry, ids: list[int], ends: list[int]) -> int:
    """The longest prefix of `ids` that `entry` (holding `stored`) serves: the last cut both share, with all
    cuts before it shared too, within their common prefix. The whole of `ids` only with the logits after it."""
    n = _common_prefix(stored, ids)
    best = 0
    for mine, theirs in zip(entry.ends, ends):
        if mine != theirs or mine > n:
            break
        best = mine
    if best == len(ids) and (entry.logits is None or len(stored) != len(ids)):
        shared = [e for e in entry.ends if e < best]
        best = shared[-1] if shared else 0
    return best


def _redundant(stored: tuple, entry: _Entry, ids: tuple, new: _Entry) -> bool:
    if len(stored) > len(ids) or _common_prefix(stored, ids) < len(stored) or not set(entry.ends) <= set(new.ends):
        return False
    return entry.logits is None or (len(stored) == len(ids) and new.logits is not None)


def _prefix_copy(cache, n: int):
    """A new cache holding a copy of the first `n` positions of `cache` (only those are copied: a shared system
    prompt of 30 tokens must not cost a copy of a 2,000-token entry)."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") for layer in layers):
        out = copy.deepcopy(cache)  # a cache type without plain per-layer tensors
        extra = out.get_seq_length() - n
        if extra:
            out.crop(-extra)  # a negative count removes that many tokens from the end
        return out
    from transformers import DynamicCache
    out = DynamicCache()
    for i, layer in enumerate(layers):
        out.update(layer.keys[:, :, :n].clone(), layer.values[:, :, :n].clone(), i)
    return out


def _common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    # Compare in blocks first (tuples/lists of ints): a prompt of thousands of tokens costs microseconds.
    step = 256
    while i + step <= n and tuple(a[i:i + step]) == tuple(b[i:i + step]):
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


# The process-wide cache `generate` uses by default (`prompt_cache=True`).
SHARED = PromptCache()
