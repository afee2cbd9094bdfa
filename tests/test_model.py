"""The embedded model: one-time conversion into the cache, fast reloads, and clear errors on bad paths."""
import json
import os
import re

import pytest
import torch

from constrained_fc.chat import CHAT_TEMPLATE, FC_TOKENS, TOOL_CALLS, render_prompt
from constrained_fc.model import (DEFAULT_MODEL_NAME, ModelLoadError, cache_dir, default_model_path, load_model)


def _tree_state(path):
    """Names, sizes and mtimes of a directory and everything in it: any rewrite shows up here."""
    state = {".": os.stat(path).st_mtime_ns}
    for entry in sorted(path.iterdir()):
        st = entry.stat()
        state[entry.name] = (st.st_size, st.st_mtime_ns)
    return state


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CONSTRAINED_FC_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CONSTRAINED_FC_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "constrained_fc")


@pytest.mark.model
def test_embedded_model_loads_with_fc_tokens(smollm):
    model, tok = smollm
    assert not model.training
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id == 2
    assert model.generation_config.pad_token_id == 2
    assert tok.chat_template == CHAT_TEMPLATE
    for token in FC_TOKENS:
        assert len(tok.encode(token, add_special_tokens=False)) == 1
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 49152 + len(FC_TOKENS)
    assert model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.rms_norm_eps == 1e-5


@pytest.mark.model
def test_tokenizer_matches_smollm2(smollm):
    _, tok = smollm
    assert tok.encode("hi", add_special_tokens=True) == tok.encode("hi", add_special_tokens=False)  # no BOS
    # SmolLM2's pre-tokenizer splits digits one by one before the GPT-2 regex; the GGUF loader drops that.
    assert tok.tokenize("x  12") == ["x", "ĠĠ", "1", "2"]
    assert tok.decode(tok.encode('{"a": 1 , "b" : 2}')) == '{"a": 1 , "b" : 2}'


@pytest.mark.model
def test_second_load_reads_the_cache_without_converting(smollm, capfd):
    path = default_model_path()
    assert path == cache_dir() / DEFAULT_MODEL_NAME
    before = _tree_state(path)
    capfd.readouterr()
    model, tok = load_model()
    assert "converting" not in capfd.readouterr().err
    assert _tree_state(path) == before
    assert not any(p.name.startswith(f".{DEFAULT_MODEL_NAME}.tmp-") for p in path.parent.iterdir())
    assert len(tok) == len(smollm[1])
    marker = json.loads((path / "constrained_fc.json").read_text())
    assert marker["fc_tokens"] == list(FC_TOKENS)


@pytest.mark.model
def test_embedded_model_answers_plain_chat(smollm):
    model, tok = smollm
    prompt = render_prompt(tok, [{"role": "user", "content": "What is the capital of France?"}])
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.model
def test_local_directory_loads_and_gets_fc_tokens(smollm):
    model, tok = load_model(default_model_path())
    assert tok.convert_tokens_to_ids(TOOL_CALLS) == smollm[1].convert_tokens_to_ids(TOOL_CALLS)
    assert not model.training


@pytest.mark.model
def test_conversion_into_an_empty_cache(monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("CONSTRAINED_FC_CACHE", str(tmp_path))
    capfd.readouterr()
    path = default_model_path()
    err = capfd.readouterr().err
    assert path == tmp_path / DEFAULT_MODEL_NAME
    assert err.count("converting") == 1 and len(err.strip().splitlines()) == 1  # one line, no progress bars
    assert [p.name for p in tmp_path.iterdir()] == [DEFAULT_MODEL_NAME]
    before = _tree_state(path)
    assert default_model_path() == path
    assert "converting" not in capfd.readouterr().err
    assert _tree_state(path) == before


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path, capfd):
    import transformers

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("CONSTRAINED_FC_CACHE", str(tmp_path))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        default_model_path()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make", ["missing", "file", "empty_dir"])
def test_bad_path_is_a_clear_value_error(tmp_path, make):
    path = tmp_path / "nope"
    if make == "file":
        path.write_text("x")
    elif make == "empty_dir":
        path.mkdir()
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        load_model(path)
    assert isinstance(info.value, ModelLoadError)


def test_bad_type_is_a_clear_value_error():
    with pytest.raises(ModelLoadError, match="path or name"):
        load_model(42)
