"""Shared fixtures: the real product model (`smollm`: SmolLM2-135M-Instruct with the shipped adapter, for tests
marked `model`) and a tiny random Llama with the real SmolLM2 tokenizer (`tiny_model`, fast enough for every
run)."""
import os
import sys

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so CI cannot fail on a lucky draw; `--hypothesis-profile
# long` searches further (500 random examples per test).
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("long", max_examples=500, deadline=None)
if not any(a.startswith("--hypothesis-profile") for a in sys.argv):
    settings.load_profile("repeatable")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm():
    """(model, tokenizer) of the shipped model, what `load_model()` gives a user; the first run converts the GGUF
    and merges the adapter into the cache."""
    from constrained_fc.model import load_model
    return load_model()


@pytest.fixture(scope="session")
def tiny_model():
    """(model, tokenizer): a randomly initialised 2-layer Llama over the SmolLM2 tokenizer (function-calling
    tokens included), so decoding logic can be tested without the real weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from constrained_fc.model import load_default_tokenizer

    tok = load_default_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


@pytest.fixture(scope="session")
def tokenizer():
    """The SmolLM2 tokenizer with the function-calling tokens (no model weights needed)."""
    from constrained_fc.model import load_default_tokenizer
    return load_default_tokenizer()
