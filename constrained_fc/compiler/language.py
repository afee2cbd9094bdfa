"""Is a text in a grammar's language? llguidance decides, the same engine that masks tokens during decoding,
so what `accepts` says is what the matcher would have allowed. It runs over a vocabulary of the 256 bytes
(llguidance works on bytes whatever the tokenizer), so no model tokenizer is needed, and this module imports
no torch: the compiler half stays light."""
from __future__ import annotations

import functools

import llguidance

from ..errors import ConstrainedFCError


class _ByteVocabulary:
    """llguidance's tokenizer protocol for token i = byte i, plus the end-of-sequence token it requires."""
    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<|end|>"]
    special_token_ids = [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


@functools.cache
def byte_tokenizer() -> llguidance.LLTokenizer:
    # No slices: they only speed up mask computation, which a 257-token vocabulary never needs.
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteVocabulary()), slices=[])


def new_matcher(tokenizer: llguidance.LLTokenizer, grammar: str) -> llguidance.LLMatcher:
    """An llguidance matcher of a Lark grammar text; a grammar llguidance cannot build raises here rather than
    leaving a matcher that rejects everything."""
    ll = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    if ll.is_error():
        raise ConstrainedFCError(f"llguidance rejected the grammar: {ll.get_error()}")
    return ll


@functools.lru_cache(maxsize=128)
def _pristine(grammar: str) -> llguidance.LLMatcher:
    # Building the matcher is the costly part (milliseconds for a large grammar); each check runs on a copy.
    return new_matcher(byte_tokenizer(), grammar)


def mismatch(grammar: str, text: str) -> str | None:
    """None when `text` is a complete sentence of `grammar`, else a one-line reason naming where it fails."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"character {e.start} ({text[e.start]!r}) has no UTF-8 encoding"
    # Validating (not consuming) the bytes plus end-of-sequence answers both questions in one pass, at about
    # half the cost of consuming: how far the text is allowed, and whether the grammar may end after it.
    # The copy keeps the shared matcher untouched when threads check at once.
    n = _pristine(grammar).deep_copy().validate_tokens(list(data) + [_ByteVocabulary.eos_token_id])
    if n > len(data):
        return None
    if n == len(data):
        return f"the text ends (after {text[-40:]!r}) before the grammar is complete"
    # A byte offset inside a multi-byte character points at that character.
    at = len(data[:n].decode("utf-8", errors="ignore"))
    return f"unexpected {text[at:at + 20]!r} at character {at}, after {text[max(0, at - 40):at]!r}"


def in_language(grammar: str, text: str) -> bool:
    return mismatch(grammar, text) is None
