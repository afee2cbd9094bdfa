"""The shipped adapter: what the package holds, how `load_model` serves it, and that `auto` decides on it."""
import json

import pytest
from safetensors import safe_open

from constrained_fc.model import SHIPPED_ADAPTER

pytestmark = pytest.mark.model


def test_adapter_ships_in_the_package_with_its_card():
    weights = SHIPPED_ADAPTER / "adapter_model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 20 * 2 ** 20
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys)
    assert any("trainable_tokens" in k for k in keys), "the five function-calling token rows must ship"
    config = json.loads((SHIPPED_ADAPTER / "adapter_config.json").read_text())
    assert config["trainable_token_indices"]
    card = (SHIPPED_ADAPTER / "README.md").read_text()
    build = json.loads((SHIPPED_ADAPTER / "build.json").read_text())
    for needed in ("python -m finetune build", build["data"]["sha256"], "SmolLM2-135M-Instruct", "Machine"):
        assert needed in card
    assert "/work/" not in card and "/root/" not in card and "/home/" not in card
    # The measured table is the evaluation's markdown, not a JSON dump.
    measured = card.split("## Measured", 1)[1]
    assert "| set | mode |" in measured and '"settings"' not in measured


def test_card_refuses_anything_but_the_evaluations_markdown(tmp_path):
    import shutil

    from finetune.recipe import refresh_card
    ship = tmp_path / "ship"
    shutil.copytree(SHIPPED_ADAPTER, ship)
    wrong = tmp_path / "results.json"
    wrong.write_text(json.dumps({"settings": {}}))
    with pytest.raises(ValueError, match="results.md"):
        refresh_card(ship, wrong)
    assert (ship / "README.md").read_text() == (SHIPPED_ADAPTER / "README.md").read_text()


def test_default_is_the_fine_tune_and_base_is_untuned(smollm):
    import torch

    from constrained_fc.model import load_model
    tuned, _ = smollm
    base, _ = load_model("base")
    assert "fc" in tuned.config._name_or_path
    diff = [n for (n, a), (_, b) in zip(tuned.named_parameters(), base.named_parameters())
            if not torch.equal(a, b)]
    assert any("q_proj" in n for n in diff) and any("embed_tokens" in n for n in diff)
    again, _ = load_model()  # merged once: the second load reads the cache
    assert again.config._name_or_path == tuned.config._name_or_path


def test_auto_calls_when_a_tool_fits_and_answers_otherwise(smollm):
    from constrained_fc.cli import DEMO_NO_TOOL_QUESTION, DEMO_QUESTION, DEMO_TOOLS
    from constrained_fc.runtime.decoding import generate
    model, tok = smollm
    r = generate(model, tok, [{"role": "user", "content": DEMO_QUESTION}], DEMO_TOOLS, max_new_tokens=96)
    assert r.finish_reason == "tool_calls" and [c.name for c in r.tool_calls] == ["get_weather"]
    assert all(c.valid for c in r.tool_calls) and r.tool_calls[0].arguments["city"] == "Paris"
    r = generate(model, tok, [{"role": "user", "content": DEMO_NO_TOOL_QUESTION}], DEMO_TOOLS, max_new_tokens=48)
    assert not r.tool_calls and r.content
