"""Settings of a training run: one `TrainConfig`, filled from defaults, a YAML/JSON file and command-line flags.

Precedence, lowest first: the defaults below; the ``train_config.json`` a previous run left in the output folder
(only with ``--resume``); ``--config FILE``; flags. The defaults were measured on this project's reference machine
(2 CPU cores, no GPU); `TrainConfig` says how.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constrained_fc.chat import CHAT_TOOLS_IN, TOOLS_IN

CONFIG_NAME = "train_config.json"


class ConfigError(ValueError):
    """A settings file or value is unusable; the message names the file and key."""


@dataclass
class TrainConfig:
    """Every setting of `finetune.train.train`.

    Defaults target "a useful model in at most 30 minutes on 2 CPU cores" with the embedded SmolLM2-135M, from
    measurements on the reference machine (2 cores; bf16 autocast on AMX; one torch thread when the cores are
    busy, since two threads on busy cores were 4-10x slower): 11 s per optimizer step of 4 conversations at
    max_length 640 on a quiet machine, 19 s while other jobs held the cores. 64 steps (256 conversations, one pass
    over a seeded sample of the data, ~127k tokens of which ~13k in the loss) took 12.5 minutes wall-clock in all
    quiet, 21 minutes busy. max_length 640 keeps 97% of the synthetic conversations, most with their distractor
    tools, at 86% of the cost of 768. LoRA rank 16 on every linear layer (4.9M trainable parameters with the 5
    token rows; the rank hardly changes the step time), lr 5e-4, 5% warmup, cosine decay: the assistant-token loss
    falls from ~1.3 to ~0.3. The token rows need their own, 10x higher rate (`token_lr`, see
    `finetune.train`): at 5e-4 the model learned the call syntax but never opened a call. `max_minutes` (27) stops
    the loop, saving a checkpoint to `--resume` from, should a busier machine need longer.
    """

    data: str | None = None  # training file, any format `finetune.data.load_examples` reads
    out: str | None = None  # output folder: the adapter, checkpoints, train_log.json, loss.png
    model: str | None = None  # local Hugging Face causal LM folder; None: the embedded SmolLM2-135M-Instruct
    format: str = "auto"  # data format (see finetune.data.load_examples)
    max_examples: int | None = None  # first N conversations after a seeded shuffle; None: what max_steps uses
    # Optimisation
    max_steps: int = 64  # optimizer steps
    batch_size: int = 1  # conversations per forward pass (1 on CPU: no padding to pay for)
    grad_accum: int = 4  # forward passes per optimizer step
    lr: float = 5e-4  # LoRA matrices
    token_lr: float | None = 5e-3  # the five function-calling token rows (None: same as lr)
    lr_scheduler: str = "cosine"
    warmup: float = 0.05  # share of max_steps (< 1) or a step count (>= 1)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    # Sequences
    max_length: int = 640  # tokens; longer conversations lose distractor tools, then trailing turns
    # Where the chat template lists the tools: "first" user message (today's template) or "last" (the layout
    # the shipped adapter was trained with; `constrained_fc.chat.chat_template`)
    tools_in: str = CHAT_TOOLS_IN
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    # Bookkeeping
    save_steps: int = 16
    save_total_limit: int | None = 2
    logging_steps: int = 1
    max_minutes: float = 27.0  # wall-clock guard for the training loop; 0 turns it off
    threads: int = 0  # torch CPU threads; 0: all cores, or 1 when other processes already keep them busy
    bf16: bool | None = None  # None: when the device computes bf16 natively (AMX / AVX512-BF16 CPUs, recent GPUs)
    resume: bool = False  # continue from the last checkpoint in `out`

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        if not self.data:
            raise ConfigError("no training data: pass --data FILE (or 'data' in the config file)")
        if not self.out:
            raise ConfigError("no output folder: pass --out DIR (or 'out' in the config file)")
        positive = ("max_steps", "batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha", "save_steps",
                    "logging_steps")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "token_lr"):
            value = getattr(self, name)
            if name == "token_lr" and value is None:
                continue
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.warmup < 0 or self.max_minutes < 0 or self.threads < 0:
            raise ConfigError("warmup, max_minutes and threads must not be negative")
        if self.tools_in not in TOOLS_IN:
            raise ConfigError(f"tools_in must be one of {', '.join(TOOLS_IN)}, got {self.tools_in!r}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError(f"max_examples must be a positive integer, got {self.max_examples!r}")
        return self


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check a value's type against the field's default (ints accepted for floats, None where None is allowed)."""
    default = FIELDS[name].default
    if value is None:
        return None
    if name == "target_modules":
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value
        raise ConfigError(f"{source}: target_modules must be a string or a list of strings")
    if isinstance(default, bool) or name in ("bf16", "resume"):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float) or name == "token_lr":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int) or name in ("max_examples", "save_total_limit"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, str):
        return value
    raise ConfigError(f"{source}: {name} has the wrong type ({type(value).__name__}: {value!r})")


def config_from_mapping(data: Any, source: str = "config") -> dict:
    """Validated {field: value} from a mapping; keys may use '-' or '_'. Unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            known = ", ".join(sorted(FIELDS))
            raise ConfigError(f"{source}: unknown setting {key!r} (known: {known})")
        out[name] = _coerce(name, value, source)
    return out


def read_config_file(path: str | Path) -> dict:
    """Settings from a YAML or JSON file (JSON is YAML, so one parser reads both)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML/JSON: {e}") from None
    return config_from_mapping(data or {}, str(p))


def build_config(overrides: dict | None = None, config_file: str | Path | None = None) -> TrainConfig:
    """Defaults < saved `train_config.json` (when resuming) < `config_file` < `overrides` (the flags that were
    given; None values mean "not given")."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    given = config_from_mapping(given, "flags")
    from_file = read_config_file(config_file) if config_file else {}
    merged: dict = {}
    resume = given.get("resume", from_file.get("resume", False))
    out = given.get("out", from_file.get("out"))
    if resume and out and (Path(out) / CONFIG_NAME).is_file():
        saved = json.loads((Path(out) / CONFIG_NAME).read_text(encoding="utf-8"))
        merged.update(config_from_mapping(saved, str(Path(out) / CONFIG_NAME)))
    merged.update(from_file)
    merged.update(given)
    return TrainConfig(**merged)


def save_config(config: TrainConfig, folder: str | Path) -> Path:
    path = Path(folder) / CONFIG_NAME
    data = config.to_dict()
    data.pop("resume", None)  # a property of one invocation, not of the run
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


__all__ = ["TrainConfig", "ConfigError", "build_config", "read_config_file", "save_config", "CONFIG_NAME",
           "config_from_mapping"]
