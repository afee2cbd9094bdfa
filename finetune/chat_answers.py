"""Plain-chat retention targets: the base model's own greedy answers to tool-free prompts.

Training for tool calls shifts every weight the LoRA touches, and with it the model's ordinary replies. Mixing in
conversations whose targets are the *base* model's greedy answers (self-distillation) anchors plain chat where
it was: the loss on those turns is lowest when the fine-tune answers exactly as the base did. The answers are
generated once per (model, prompt set, budget) and cached as JSONL, since they take minutes on a CPU.

Answers are decoded in batches (left padding), greedy, in float32 — the dtype the retention check
(`finetune.evaluate.retention`) uses. An answer that hits the token budget without ending is kept with
``finished: false``; the mixer decides what to do with it (see `finetune.mix`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

CACHE_VERSION = 1


def _key(model_id: str, prompt: str, max_new_tokens: int) -> str:
    return hashlib.sha256(json.dumps([CACHE_VERSION, model_id, prompt, max_new_tokens]).encode()).hexdigest()[:16]


def model_fingerprint(model) -> str:
    """Identifies the weights well enough for a cache key: path plus a checksum of a few parameters."""
    import torch

    with torch.no_grad():
        sums = [float(p.float().sum()) for _, p in list(model.named_parameters())[:4]]
    return f"{getattr(model.config, '_name_or_path', '?')}:{sums}"


def generate_answers(prompts: Iterable[str], cache: str | Path, *, model=None, tokenizer=None,
                     max_new_tokens: int = 200, batch_size: int = 16) -> dict[str, dict]:
    """{prompt: {"answer", "finished"}} for every prompt, from `cache` where present, otherwise generated with
    `model` (default: the embedded base model) and appended to `cache`."""
    prompts = list(dict.fromkeys(prompts))
    cache = Path(cache)
    if model is None:
        from constrained_fc.model import load_model
        model, tokenizer = load_model("base")
    fp = model_fingerprint(model)
    have: dict[str, dict] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            have[row["key"]] = row
    todo = [p for p in prompts if _key(fp, p, max_new_tokens) not in have]
    if todo:
        import torch
        from tqdm import tqdm

        from constrained_fc.chat import render_prompt

        cache.parent.mkdir(parents=True, exist_ok=True)
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        # Similar lengths share a batch, so little padding is computed.
        todo.sort(key=len)
        try:
            with open(cache, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc="base-model answers",
                                                               unit="prompt") as bar:
                for i in range(0, len(todo), batch_size):
                    chunk = todo[i:i + batch_size]
                    texts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) for p in chunk]
                    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                    with torch.inference_mode():
                        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                             eos_token_id=tokenizer.eos_token_id,
                                             pad_token_id=tokenizer.pad_token_id)
                    for p, row in zip(chunk, out[:, enc.input_ids.shape[1]:].tolist()):
                        finished = tokenizer.eos_token_id in row
                        if finished:
                            row = row[:row.index(tokenizer.eos_token_id)]
                        rec = {"key": _key(fp, p, max_new_tokens), "prompt": p,
                               "answer": tokenizer.decode(row, skip_special_tokens=True), "finished": finished}
                        have[rec["key"]] = rec
                        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    f.flush()
                    bar.update(len(chunk))
        finally:
            tokenizer.padding_side = side
    return {p: have[_key(fp, p, max_new_tokens)] for p in prompts}


__all__ = ["generate_answers", "model_fingerprint"]
