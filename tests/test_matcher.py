"""The token matcher's cache of a call list's opening masks (runtime/matcher.py): a copied mask is exactly the
mask llguidance computes for that state, and the cache stops following a matcher once it is past its first
tokens or rolled back beyond them."""
import torch

from constrained_fc import compile_tools
from constrained_fc.runtime import matcher as mod
from constrained_fc.runtime.matcher import TokenMatcher, allocate_bitmask

TOOLS = [{"name": f"tool_{i}", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}
         for i in range(30)]


def _computed(m: TokenMatcher) -> torch.Tensor:
    bm = allocate_bitmask(1, m.n_vocab)
    m.ll.unsafe_compute_mask_ptr(bm[0].data_ptr(), bm[0].numel() * 4)
    return bm[0]


def test_cached_opening_masks_equal_computed_ones(tokenizer):
    g = compile_tools(TOOLS, warn=False)
    text = '[{"name": "tool_7", "arguments": {"x": 12}}]'
    ids = tokenizer.encode(text, add_special_tokens=False)
    for _ in range(2):  # the second matcher copies every mask the first one computed
        m = TokenMatcher(g.body_lark, tokenizer)
        for tid in ids:
            bm = allocate_bitmask(1, m.n_vocab)
            m.fill_mask(bm, 0)
            assert torch.equal(bm[0], _computed(m))
            assert m.consume(tid)
    key = (m.n_vocab, g.body_lark, ())
    assert key in mod._PREFIX_MASKS[tokenizer]


def test_prefix_tracking_follows_rollback_and_stops(tokenizer):
    g = compile_tools(TOOLS, warn=False)
    ids = tokenizer.encode('[{"name": "tool_3", "arguments": {"x": 1}}]', add_special_tokens=False)
    m = TokenMatcher(g.body_lark, tokenizer)
    assert m.consume_many(ids[:3]) and m._prefix == tuple(ids[:3])
    m.rollback(2)
    assert m._prefix == tuple(ids[:1])
    bm = allocate_bitmask(1, m.n_vocab)
    m.fill_mask(bm, 0)
    assert torch.equal(bm[0], _computed(m))
    assert m.consume_many(ids[1:])
    assert m._prefix is None or len(m._prefix) <= mod._MAX_PREFIX
