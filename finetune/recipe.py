"""One command from the public data to the shipped adapter: ``python -m finetune build --recipe FILE``.

A recipe is a YAML file with two sections, ``data`` (`finetune.mix.MixConfig`) and ``train``
(`finetune.config.TrainConfig`). `build` runs, in order, each step skipped when its output is already there
(so an interrupted build continues where it stopped, training included, from its last checkpoint):

1. the base model's greedy answers to the tool-free prompts (`finetune.chat_answers`), cached;
2. the mixture (`finetune.mix.build_mix`) -> ``OUT/data/train.jsonl`` and its report (counts, sha256);
3. training (`finetune.train.train`) -> ``OUT`` (adapter, checkpoints, train_log.json, loss.png);
4. export (`export_adapter`): the adapter in float16 with a model card, into the package folder that
   `constrained_fc.model.load_model` loads by default.
"""
from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from pathlib import Path

from constrained_fc.chat import CHAT_TOOLS_IN

from .config import ConfigError, TrainConfig, config_from_mapping
from .mix import MixConfig, MixError, build_mix

CARD_NAME = "README.md"
BUILD_META = "build.json"


def read_recipe(path: str | Path) -> tuple[MixConfig, dict]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe not found: {p}")
    raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict) or set(raw) - {"data", "train"}:
        raise ConfigError(f"{p}: a recipe has two sections, 'data' and 'train'")
    try:
        mix = MixConfig.from_mapping(raw.get("data") or {}, f"{p}: data")
    except (MixError, TypeError) as e:
        raise ConfigError(str(e)) from None
    return mix, config_from_mapping(raw.get("train") or {}, f"{p}: train")


def _relative_sources(report: dict, data_dir: Path) -> dict:
    """The mix report with the data folder's absolute path replaced by ``data/`` (the card is published)."""
    text = json.dumps(report).replace(str(data_dir.resolve()) + "/", "data/").replace(str(data_dir) + "/", "data/")
    return json.loads(text)


def build(recipe: str | Path, out: str | Path, ship: str | Path | None, *, data_dir: str | None = None,
          command: str | None = None) -> dict:
    """Run the four steps of the module docstring; returns the build record (also written to OUT/build.json)."""
    from constrained_fc.eval.data import data_dir as resolve_data_dir

    from .chat_answers import generate_answers
    from transformers.trainer_utils import get_last_checkpoint

    from .train import train

    mix_cfg, train_fields = read_recipe(recipe)
    if data_dir:
        mix_cfg.data_dir = data_dir
    root = resolve_data_dir(mix_cfg.data_dir)
    out = Path(out)
    data_file = out / "data" / "train.jsonl"
    t0 = time.time()

    answers_file = out / "data" / "chat_answers.jsonl"
    answer = lambda prompts: generate_answers(prompts, answers_file, max_new_tokens=mix_cfg.chat_max_new_tokens)
    report_file = out / "data" / "mix_report.json"
    if not (data_file.is_file() and report_file.is_file()):
        report = build_mix(mix_cfg, data_file, answer).to_dict()
        report_file.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    report = json.loads(report_file.read_text(encoding="utf-8"))
    t_data = time.time() - t0
    print(f"data: {data_file} ({sum(report['counts'].values())} conversations, sha256 {report['sha256'][:12]})",
          file=sys.stderr)

    config = TrainConfig(**{**train_fields, "data": str(data_file), "out": str(out),
                            "resume": get_last_checkpoint(out) is not None})
    result = train(config)
    record = {"recipe": Path(recipe).name, "command": command, "data": _relative_sources(report, root),
              "mix": {**{k: v for k, v in mix_cfg.__dict__.items() if k != "data_dir"},
                      "distractors": list(mix_cfg.distractors)},
              "train": {k: v for k, v in config.to_dict().items() if k not in ("data", "out", "resume")},
              "metrics": result.metrics, "data_seconds": round(t_data, 1),
              "machine": machine_description()}
    # A resumed build reports the wall time of every run that contributed.
    log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    record["train_log"] = {"steps": len(log.get("steps", [])), "trainable_parameters": log.get("trainable_parameters")}
    record["prepared"] = {k: log["data"][k] for k in ("examples", "used", "skipped", "tokens", "trained_tokens",
                                                      "dropped_tools", "cut")}
    (out / BUILD_META).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if ship:
        export_adapter(out, ship, record)
    return record


def machine_description() -> dict:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__}


def export_adapter(train_out: str | Path, ship: str | Path, record: dict) -> Path:
    """Copy the trained adapter into `ship` as float16 safetensors (half the size; merging adds it to float32
    weights, where the rounding is below the model's own noise), with its config and a model card."""
    import torch
    from safetensors.torch import load_file, save_file

    train_out, ship = Path(train_out), Path(ship)
    ship.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(train_out / "adapter_model.safetensors"))
    save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()},
              str(ship / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((train_out / "adapter_config.json").read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = "SmolLM2-135M-Instruct"  # the embedded model; no machine path
    (ship / "adapter_config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (ship / BUILD_META).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    (ship / CARD_NAME).write_text(model_card(record, ship), encoding="utf-8")
    return ship


def refresh_card(ship: str | Path, results_md: str | Path) -> Path:
    """Rewrite the card of an exported adapter with a measured results table (``finetune evaluate`` output)."""
    from .evaluate import RESULTS_TITLE

    ship = Path(ship)
    record = json.loads((ship / BUILD_META).read_text(encoding="utf-8"))
    text = Path(results_md).read_text(encoding="utf-8")
    if not text.startswith(RESULTS_TITLE):
        # The card embeds the file as it is: a results.json (or any other file) would be published as the table.
        raise ValueError(f"{results_md}: not the results.md that `finetune evaluate` writes (it starts with "
                         f"{RESULTS_TITLE!r}); pass OUT/results.md, not results.json")
    (ship / "results.md").write_text(text, encoding="utf-8")
    (ship / CARD_NAME).write_text(model_card(record, ship), encoding="utf-8")
    return ship / CARD_NAME


def model_card(record: dict, ship: Path) -> str:
    m, data, mix = record["metrics"], record["data"], record["mix"]
    total = sum(data["counts"].values())
    rows = "\n".join(f"| {k} | {v} | {v / total:.0%} | {data['available'].get(k, '-')} |"
                     for k, v in data["counts"].items())
    results = ship / "results.md"
    measured = results.read_text(encoding="utf-8").replace("\n# ", "\n### ").lstrip("# ") if results.is_file() \
        else "Not measured yet: `python -m finetune evaluate --model default ...` (see the repository README)."
    minutes = (m.get("train_seconds") or 0) / 60
    p = record.get("prepared")
    prepared = (f"Trained on {p['used']} of the {p['examples']} conversations ({p['tokens']:,} tokens, "
                f"{p['trained_tokens']:,} in the loss); skipped: {p['skipped'] or 'none'} (longer than max_length "
                f"even without distractor tools); distractor tools dropped to fit in {p['dropped_tools']}.\n\n"
                if p else "")
    extras = ""
    if mix.get("hard_distractors"):
        extras += (f"{mix['hard_distractors']:.0%} of the Seal-Tools distractor tools come from the request's own "
                   f"field (close in topic); the rest are drawn from the whole library. ")
    if mix.get("synth_mix"):
        extras += "Synthetic objectives: " + ", ".join(f"{k} {v:g}" for k, v in mix["synth_mix"].items()) + ". "
    extras += "\n\n" if extras else ""
    # Records from before the setting existed were built with the tools block in the last user message.
    tools_in = record["train"].get("tools_in", "last")
    layout_note = "" if tools_in == CHAT_TOOLS_IN else (
        f" (today's template lists them in the {CHAT_TOOLS_IN}; single-turn prompts are the same in both, "
        "two-turn conversations are measured by `benchmarks/followup.py`)")
    return f"""# smollm2-fc: the shipped function-calling adapter

LoRA adapter (plus the five function-calling token rows) for **SmolLM2-135M-Instruct**, trained by
`finetune/` to decide by itself when to call a tool: it writes `[TOOL_CALLS]`, and from there
constrained_fc's grammar holds the call to the tools' schemas. `constrained_fc.load_model()` loads the base
model with this adapter merged (once, into the model cache); `load_model("base")` gives the untuned model.

## How it was built
- Command: `{record.get('command') or 'python -m finetune build --recipe finetune/recipes/' + record['recipe']}`
- Recipe: `finetune/recipes/{record['recipe']}`; data seed {mix['seed']}; training data sha256
  `{data['sha256']}`
- Training: {m['global_step']} optimizer steps of {record['train']['grad_accum'] * record['train']['batch_size']}
  conversations, max_length {record['train']['max_length']}, LoRA r={record['train']['lora_r']} on
  {record['train']['target_modules']}, lr {record['train']['lr']:g} (token rows {record['train']['token_lr']:g});
  loss {m['first_loss']:.3f} -> {m['last_loss']:.3f}; {minutes:.1f} min of training
  ({m.get('seconds_per_step')} s/step), data preparation {record['data_seconds'] / 60:.1f} min
- Machine: {record['machine']['cpu']}, {record['machine']['cores']} cores, GPU: {record['machine']['gpu'] or 'none'};
  Python {record['machine']['python']}, torch {record['machine']['torch']}
- Chat template: constrained_fc's ChatML, the tools block in the {tools_in} user message{layout_note}

## Data
| component | conversations | share | available |
|---|---|---|---|
{rows}

{prepared}{extras}Sources: Seal-Tools (`dev`, `test_in_domain`), API-Bank levels 1-2, Glaive (300-conversation sample), the
synthetic generator (`finetune/synth.py`), self-instruct prompts answered by the base model itself. Never
trained on: BFCL (every example whose user text matches a BFCL question is dropped: {data['dropped_bfcl']}
were), MT-Bench, Seal-Tools `test_out_domain` and the {data['heldout_tools']} tools only it calls (never even
offered as distractors), so that split scores unseen tools.

## Measured
{measured}
"""


def _cmd(argv: list[str] | None = None) -> str:
    return "python -m finetune " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))


__all__ = ["build", "read_recipe", "export_adapter", "model_card", "refresh_card", "machine_description"]
