"""Fold a trained adapter into its base model: a standalone Hugging Face model folder.

The result loads with `constrained_fc.model.load_model(DIR)` and the CLI's ``--model DIR`` like any other local
model: the LoRA deltas are merged into the linear weights (`merge_and_unload`), the trained function-calling
token rows into the (tied) embedding matrix, and the tokenizer is saved alongside with the five tokens and the
chat template.
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import ConfigError
from .train import ADAPTER_META

MERGE_META = "finetune_merge.json"


def adapter_base(adapter_dir: str | Path) -> str | None:
    """The base model an adapter was trained on: a folder, or None for the embedded SmolLM2-135M-Instruct."""
    adapter_dir = Path(adapter_dir)
    meta = adapter_dir / ADAPTER_META
    if meta.is_file():
        return json.loads(meta.read_text(encoding="utf-8")).get("base_model")
    cfg = adapter_dir / "adapter_config.json"
    if cfg.is_file():
        base = json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
        from constrained_fc.model import DEFAULT_MODEL_NAME, cache_dir
        if base and Path(base).resolve() != (cache_dir() / DEFAULT_MODEL_NAME).resolve():
            return base
    return None


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None) -> Path:
    """Merge the adapter in `adapter_dir` (a training output folder or one of its ``checkpoint-N``) into its base
    model (`base` overrides the one recorded at training time) and save the standalone model to `out_dir`."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from constrained_fc.chat import add_function_calling_tokens
    from constrained_fc.model import load_model

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_dir} holds no adapter (no adapter_config.json)")
    if out_dir.resolve() == adapter_dir.resolve():
        raise ConfigError("--out must differ from --adapter")
    base = base if base is not None else adapter_base(adapter_dir)
    model, tok = load_model(base or "base")
    # The tokenizer saved with the adapter is the one the adapter was trained with (same tokens, same template).
    if (adapter_dir / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(adapter_dir), local_files_only=True)
        add_function_calling_tokens(tok, model)
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    merged = peft_model.merge_and_unload()
    merged.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    meta = {"adapter": str(adapter_dir.resolve()), "base_model": base or "embedded SmolLM2-135M-Instruct"}
    (out_dir / MERGE_META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return out_dir


__all__ = ["merge_adapter", "adapter_base", "MERGE_META"]
