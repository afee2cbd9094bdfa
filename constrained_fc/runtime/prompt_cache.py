"""The prompt cache: the KV cache of token sequences this process has already run through a model, so the next
request only prefills what is new. A second question with the same tools starts after the tools block; an
agent's next step, or a conversation's next turn, only prefills what was appended.

Entries are keyed by the model and tokenizer objects (a different model or tokenizer never shares an entry)
and hold the exact ids that were fed; a lookup finds the longest common prefix of the new prompt among them and
hands back a private copy cut to that prefix, so the stored entry is never changed by the generation that
uses it. Bounded: `max_entries` sequences (least recently used dropped first).

Changing a model's weights in place (training it) does not change its identity: call `clear()` then.
"""
from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict

DEFAULT_MAX_ENTRIES = 4


class PromptCache:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES):
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            from ..errors import ConstrainedFCError
            raise ConstrainedFCError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()  # (model ref, tokenizer ref, ids tuple) -> cache
        self._lock = threading.Lock()

    @staticmethod
    def _owner(model, tokenizer) -> tuple:
        return (id(model), id(tokenizer))

    def lookup(self, model, tokenizer, ids: list[int], bounds: list[int] | None = None):
        """(number of leading `ids` whose KV is reused, a private DynamicCache holding exactly them) or (0, None).
        At most len(ids) - 1 are reused: the last prompt token must run to give the next token's logits. With
        `bounds` (where the caller cuts its prefill), the reuse ends on the last bound within the shared
        prefix, so the reused KV is what the caller's own prefill would have computed."""
        owner = self._owner(model, tokenizer)
        best, best_key = 0, None
        with self._lock:
            for key in self._entries:
                if key[:2] != owner or key[2]() is not model:
                    continue
                stored = key[3]
                n = _common_prefix(stored, ids)
                if n > best:
                    best, best_key = n, key
            best = min(best, len(ids) - 1)
            if bounds is not None:
                best = max((b for b in bounds if b <= best), default=0)
            if best <= 0:
                return 0, None
            self._entries.move_to_end(best_key)
            cache = _prefix_copy(self._entries[best_key], best)
        return best, cache

    def store(self, model, tokenizer, ids: list[int], cache) -> None:
        """Keep `cache`, whose first positions hold the KV of `ids` (later ones are dropped), for later lookups
        (the caller gives it up)."""
        if not ids or cache is None or cache.get_seq_length() < len(ids):
            return
        extra = cache.get_seq_length() - len(ids)
        if extra:
            cache.crop(-extra)  # keep exactly `ids` (a negative count removes tokens from the end)
        key = (*self._owner(model, tokenizer), weakref.ref(model), tuple(ids))
        with self._lock:
            # A stored sequence that this one extends is redundant: every prefix it could serve, this serves.
            for k in [k for k in self._entries if k[:2] == key[:2] and _common_prefix(k[3], ids) == len(k[3])]:
                del self._entries[k]
            self._entries[key] = cache
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


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
