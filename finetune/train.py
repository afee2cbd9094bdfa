"""LoRA fine-tuning of a small causal LM on tool-calling conversations, with TRL's `SFTTrainer` and PEFT.

What is trained: LoRA adapters on the linear layers, plus the embedding rows of the five function-calling tokens
(`constrained_fc.chat.FC_TOKENS`) through PEFT's ``LoraConfig(trainable_token_indices=...)``. Every other
embedding row stays frozen. When input and output embeddings are tied (SmolLM2), PEFT ties the output side of
those rows to the same trainable rows, so ``[TOOL_CALLS]`` learns both how to be read and when to be emitted.

What the loss sees: assistant turns only. Each conversation is rendered with the project's chat template
(`constrained_fc.chat.render_prompt`, the prompt the decoder uses at inference) and cut at the assistant turns,
``<|im_start|>assistant\\n`` ... ``<|im_end|>``: the pieces are tokenized one by one, so a turn's tokens are
exactly the ones the model would generate after the generation prompt, and its mask is exact by construction.
The end-of-turn token is inside the mask, so the model learns to stop. The template lists the tools inside
the *first* user message; a tool-calling turn that comes before it (a conversation that opens with the
assistant) is left out of the loss, since the model would learn to call tools it has not been shown yet.

Long conversations: when a rendering exceeds `max_length`, distractor tools (offered, never called) are dropped,
largest first, keeping at least one; if it is still too long the conversation is cut after the last assistant
turn that fits; a conversation whose first trained turn does not fit is skipped (and counted).

The dataset handed to `SFTTrainer` is pre-tokenized (``input_ids`` + ``assistant_masks``): TRL turns the mask
into labels (-100 outside). The loss projects only the assistant positions through the LM head (on a CPU the
full-vocabulary head over every prompt position is ~20% of a step).
"""
from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from constrained_fc.chat import CHAT_TOOLS_IN, chat_template, tools_layout, tools_message_index, uses_our_template

from .config import ConfigError, TrainConfig, save_config
from .data import Example, RecordError, load_examples

log = logging.getLogger(__name__)

ASSISTANT_HEADER = "<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"
ADAPTER_META = "finetune_adapter.json"
LOG_NAME = "train_log.json"
PLOT_NAME = "loss.png"


# --------------------------------------------------------------------------------------------- tokenizing
@dataclass
class Features:
    """One training sequence: token ids, the assistant mask (1 = in the loss) and what truncation did."""

    input_ids: list[int]
    assistant_masks: list[int]
    dropped_tools: int = 0
    cut_turns: int = 0


def fc_token_ids(tokenizer) -> list[int]:
    """Ids of the five function-calling tokens (the rows that are trained)."""
    from constrained_fc.chat import FC_TOKENS

    ids = [tokenizer.convert_tokens_to_ids(t) for t in FC_TOKENS]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ConfigError("the tokenizer lacks the function-calling tokens; run "
                          "constrained_fc.chat.add_function_calling_tokens on it first")
    return ids


def trained_turns(messages: list[dict], tools: list, tools_in: str = CHAT_TOOLS_IN) -> list[bool]:
    """For each assistant message, in order: does it go into the loss? All do, except tool-calling turns placed
    before the tools are listed (`chat.tools_message_index`: the template lists them in the first user message,
    or the last with `tools_in="last"`)."""
    listed = tools_message_index(messages, tools_in) if tools else -1
    return [not (tools and m.get("tool_calls") and i < listed)
            for i, m in enumerate(messages) if m.get("role") == "assistant"]


def _pieces(text: str) -> list[tuple[str, bool]]:
    """Split a rendering into (text, is_assistant_turn) pieces; an assistant piece runs from just after
    ``<|im_start|>assistant\\n`` through ``<|im_end|>``."""
    out, pos = [], 0
    while True:
        start = text.find(ASSISTANT_HEADER, pos)
        if start < 0:
            break
        body = start + len(ASSISTANT_HEADER)
        end = text.find(END_OF_TURN, body)
        if end < 0:
            raise RecordError("template", "an assistant turn has no end-of-turn token")
        end += len(END_OF_TURN)
        out.append((text[pos:body], False))
        out.append((text[body:end], True))
        pos = end
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def encode_conversation(tokenizer, messages: list[dict], tools: list | None,
                        trained: list[bool] | None = None) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, assistant_masks, end index of each trained turn) for one conversation.

    The conversation is rendered once with `render_prompt` and tokenized piece by piece (prompt pieces and
    assistant pieces alternate), so each assistant piece starts exactly where generation starts at inference.
    Raises `RecordError` when the chat template is not ChatML-shaped (no ``<|im_start|>assistant`` turns)."""
    from constrained_fc.chat import render_prompt

    if trained is None:
        trained = trained_turns(messages, tools or [], tools_layout(tokenizer) or CHAT_TOOLS_IN)
    text = render_prompt(tokenizer, messages, tools or None, add_generation_prompt=False)
    pieces = _pieces(text)
    n_turns = sum(is_turn for _, is_turn in pieces)
    if n_turns != len(trained):
        raise RecordError("template", f"the rendering has {n_turns} assistant turns, the conversation "
                                      f"{len(trained)} (training needs a ChatML-style chat template)")
    ids: list[int] = []
    mask: list[int] = []
    ends: list[int] = []
    turn = 0
    for piece, is_turn in pieces:
        if not piece:
            continue
        piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        use = is_turn and trained[turn]
        ids += piece_ids
        mask += [int(use)] * len(piece_ids)
        if is_turn:
            if use:
                ends.append(len(ids))
            turn += 1
    return ids, mask, ends


def build_features(example: Example, tokenizer, max_length: int) -> Features:
    """Tokenize one `Example` for training, shortening it to `max_length` tokens as the module docstring says.
    Raises `RecordError` (kind ``no_target`` / ``too_long`` / ``template``) when it cannot be used."""
    messages, tools = example.messages, list(example.tools)
    trained = trained_turns(messages, tools, tools_layout(tokenizer) or CHAT_TOOLS_IN)
    if not any(trained):
        raise RecordError("no_target", "no assistant turn goes into the loss")
    ids, mask, ends = encode_conversation(tokenizer, messages, tools, trained)
    dropped = 0
    if len(ids) > max_length and len(tools) > 1:
        called = set(example.called_tools)
        distractors = sorted((t for t in tools if t["function"]["name"] not in called),
                             key=lambda t: -len(json.dumps(t)))
        for tool in distractors:
            if len(tools) <= 1:
                break
            tools.remove(tool)
            dropped += 1
            ids, mask, ends = encode_conversation(tokenizer, messages, tools, trained)
            if len(ids) <= max_length:
                break
    cut = 0
    if len(ids) > max_length:
        fitting = [e for e in ends if e <= max_length]
        if not fitting:
            raise RecordError("too_long", f"{len(ids)} tokens; its first trained turn ends past max_length "
                                          f"{max_length}")
        cut = len(ends) - len(fitting)
        ids, mask = ids[:fitting[-1]], mask[:fitting[-1]]
    if example.meta.get("open_end") and not cut:
        # The target was cut by a token budget (a base-model answer that had not ended): its last token is the
        # end-of-turn the template appends, which the model must not learn to emit there.
        mask = mask[:ends[-1] - 1] + [0] + mask[ends[-1]:]
    return Features(ids, mask, dropped, cut)


@dataclass
class PrepReport:
    """What preparing the dataset did."""

    examples: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    dropped_tools: int = 0  # examples that lost distractor tools
    cut: int = 0  # examples cut after an earlier turn
    tokens: int = 0
    trained_tokens: int = 0
    max_length: int = 0

    def to_dict(self) -> dict:
        return {"examples": self.examples, "used": self.used, "skipped": dict(self.skipped),
                "dropped_tools": self.dropped_tools, "cut": self.cut, "tokens": self.tokens,
                "trained_tokens": self.trained_tokens,
                "mean_length": round(self.tokens / self.used, 1) if self.used else 0.0,
                "max_length": self.max_length}

    def summary(self) -> str:
        d = self.to_dict()
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (f"{d['used']}/{d['examples']} conversations, {d['tokens']} tokens (mean {d['mean_length']}, "
                f"{d['trained_tokens']} in the loss); distractor tools dropped in {d['dropped_tools']}, cut after an "
                f"earlier turn {d['cut']}; skipped: {skipped}")


def prepare_features(examples: Iterable[Example], tokenizer, max_length: int) -> tuple[list[Features], PrepReport]:
    report = PrepReport(max_length=max_length)
    feats = []
    for ex in examples:
        report.examples += 1
        try:
            f = build_features(ex, tokenizer, max_length)
        except RecordError as e:
            report.skipped[e.kind] += 1
            log.info("skipped example %s: %s", ex.meta.get("line", ex.meta.get("index", "?")), e.message)
            continue
        except Exception as e:  # a conversation the template rejects: skip it, as the data loaders do
            report.skipped["render"] += 1
            log.info("skipped example %s: %s", ex.meta.get("line", "?"), e)
            continue
        report.used += 1
        report.dropped_tools += f.dropped_tools > 0
        report.cut += f.cut_turns > 0
        report.tokens += len(f.input_ids)
        report.trained_tokens += sum(f.assistant_masks)
        feats.append(f)
    return feats, report


def prepare_dataset(examples: Iterable[Example], tokenizer, max_length: int):
    """A `datasets.Dataset` with ``input_ids`` and ``assistant_masks`` columns, and its `PrepReport`."""
    from datasets import Dataset

    feats, report = prepare_features(examples, tokenizer, max_length)
    data = {"input_ids": [f.input_ids for f in feats], "assistant_masks": [f.assistant_masks for f in feats]}
    return Dataset.from_dict(data), report


# ------------------------------------------------------------------------------------------------ machine
def auto_threads(requested: int = 0) -> int:
    """CPU threads for torch: `requested` if set; else every core, or a single thread when other processes
    already keep the cores busy (OpenMP threads that wait on each other under contention made a training step
    4-10x slower than one thread on the 2-core reference machine)."""
    if requested > 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def bf16_available() -> bool:
    """Does this machine compute in bfloat16 natively (so bf16 autocast speeds training up)?"""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# ---------------------------------------------------------------------------------------------- the trainer
def _sft_trainer_class():
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class AssistantLossSFTTrainer(SFTTrainer):
        """`SFTTrainer` whose loss runs the LM head on the labelled (assistant) positions only. Same loss as
        TRL's (sum of token NLLs over `num_items_in_batch`), without the full-vocabulary projection of every
        prompt position. Models with logit scaling or soft-capping keep TRL's own loss.

        The function-calling token rows get their own learning rate (`token_lr`): they start as the mean of all
        rows, and ``[TOOL_CALLS]`` must climb from an average logit to the top one at the start of every call
        turn; at the LoRA rate Adam moves each coordinate too little in a short run for that (measured: after 64
        steps at 5e-4 it was still 2-4 nats below the top token, so the model never opened a call)."""

        token_lr: float | None = None

        def create_optimizer(self, model=None):
            opt_model = self.model if model is None else model
            if self.optimizer is None and self.token_lr:
                named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
                rows = [p for n, p in named if "trainable_tokens_delta" in n]
                decay = set(self.get_decay_parameter_names(opt_model))
                groups = [
                    {"params": [p for n, p in named if "trainable_tokens_delta" not in n and n in decay],
                     "weight_decay": self.args.weight_decay},
                    {"params": [p for n, p in named if "trainable_tokens_delta" not in n and n not in decay],
                     "weight_decay": 0.0},
                    {"params": rows, "weight_decay": 0.0, "lr": self.token_lr},
                ]
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                self.optimizer = optimizer_cls([g for g in groups if g["params"]], **optimizer_kwargs)
            return super().create_optimizer(model)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            core = model.get_base_model() if hasattr(model, "get_base_model") else model
            cfg = core.config.get_text_config()
            if return_outputs or any(getattr(cfg, a, None) for a in
                                     ("final_logit_softcapping", "logit_scale", "logits_scaling")):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"]
            kwargs = {k: v for k, v in inputs.items() if k != "labels"}
            kwargs["use_cache"] = False
            hidden = core.base_model(**kwargs).last_hidden_state[:, :-1]
            targets = labels[:, 1:].to(hidden.device)
            mask = targets != -100
            if not bool(mask.any()):
                return hidden.sum() * 0.0
            logits = core.get_output_embeddings()(hidden[mask]).float()
            gold = targets[mask]
            nll = F.cross_entropy(logits, gold, reduction="sum")
            n = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = nll / torch.as_tensor(n, device=nll.device).clamp(min=1)
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                self._metrics[mode]["mean_token_accuracy"].append((logits.argmax(-1) == gold).float().mean().item())
            return loss

    return AssistantLossSFTTrainer


def _callbacks(config: TrainConfig, log_writer):
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Stop (and save a checkpoint) once the training loop has run `seconds`."""

        def __init__(self, seconds: float):
            self.seconds = seconds
            self.t0 = None
            self.stopped_at = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if self.seconds and self.t0 is not None and time.monotonic() - self.t0 > self.seconds:
                if state.global_step < state.max_steps:
                    self.stopped_at = state.global_step
                    control.should_training_stop = True
                    control.should_save = True
            return control

    class LogWriter(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            log_writer(state.log_history, step=state.global_step)

    return TimeBudget(config.max_minutes * 60), LogWriter()


@dataclass
class TrainResult:
    out: Path
    global_step: int
    log_path: Path
    plot_path: Path | None
    stopped_by_time_budget: bool
    metrics: dict = field(default_factory=dict)


def _steps_from_history(history: list[dict], times: dict[int, float] | None = None) -> list[dict]:
    keep = ("step", "loss", "learning_rate", "grad_norm", "mean_token_accuracy", "epoch")
    out = []
    for h in history:
        if "loss" in h:
            row = {k: h[k] for k in keep if k in h}
            if times and h.get("step") in times:
                row["time"] = times[h["step"]]
            out.append(row)
    return out


def plot_loss(steps: list[dict], path: str | Path, title: str = "training loss") -> Path | None:
    """Loss per step (and a smoothed curve) as a PNG; None when matplotlib is missing or there is nothing."""
    points = [(s["step"], s["loss"]) for s in steps if isinstance(s.get("loss"), (int, float))]
    if not points:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    xs, ys = zip(*points)
    smooth, ema = [], None
    for y in ys:
        ema = y if ema is None else 0.8 * ema + 0.2 * y
        smooth.append(ema)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(xs, ys, lw=0.8, alpha=0.5, label="loss per step")
    ax.plot(xs, smooth, lw=2, label="smoothed (EMA 0.8)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("assistant-token loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _load_training_examples(config: TrainConfig) -> tuple[list[Example], Any]:
    examples, report = load_examples(config.data, format=config.format)
    if not examples:
        raise ConfigError(f"{config.data}: no usable training examples ({report.summary()})")
    random.Random(f"train:{config.seed}").shuffle(examples)
    if config.max_examples:
        examples = examples[:config.max_examples]
    else:
        # Only what max_steps will consume (one pass), plus a margin for conversations preparation skips:
        # tokenizing the rest would only cost time.
        needed = config.max_steps * config.batch_size * config.grad_accum
        examples = examples[:int(needed * 1.1) + 8]
    return examples, report


def train(config: TrainConfig | dict) -> TrainResult:
    """Run one training (or continue one with ``config.resume``); see the module docstring. Writes to
    ``config.out``: the adapter (``adapter_model.safetensors``, ``adapter_config.json``), the tokenizer,
    ``finetune_adapter.json`` (base model), ``train_config.json``, ``train_log.json``, ``loss.png`` and
    ``checkpoint-N`` folders."""
    if isinstance(config, dict):
        config = TrainConfig(**config)
    config.validate()
    out = Path(config.out)
    resume_from = None
    if config.resume:
        from transformers.trainer_utils import get_last_checkpoint

        # get_last_checkpoint lists the folder, so a missing one must be caught first.
        newest = get_last_checkpoint(out) if out.is_dir() else None
        if newest is None:
            raise ConfigError(f"--resume: no checkpoint-N folder in {out}")
        resume_from = Path(newest)
    out.mkdir(parents=True, exist_ok=True)

    import warnings

    import torch

    # PEFT and TRL still ask the model for the pre-v5 name of activation checkpointing; nothing to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    threads = auto_threads(config.threads)
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from peft import LoraConfig
    from trl import SFTConfig

    from constrained_fc.model import load_model

    t_start = time.time()
    model, tok = load_model(config.model or "base")  # the untuned model, never the shipped fine-tune
    if uses_our_template(tok):
        tok.chat_template = chat_template(config.tools_in)  # saved with the run, so its prompts stay known
    token_ids = fc_token_ids(tok)
    examples, load_report = _load_training_examples(config)
    dataset, prep = prepare_dataset(examples, tok, config.max_length)
    if len(dataset) == 0:
        raise ConfigError(f"no conversation could be prepared for training ({prep.summary()})")
    print(f"data: {load_report.summary()}", file=sys.stderr)
    print(f"prepared: {prep.summary()}", file=sys.stderr)
    bf16 = bf16_available() if config.bf16 is None else config.bf16
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"model: {config.model or 'embedded SmolLM2-135M-Instruct'}; device {device}, {threads} thread(s), "
          f"{'bf16 autocast' if bf16 else 'fp32'}", file=sys.stderr)

    base_name = getattr(model.config, "_name_or_path", None)
    meta = {"base_model": str(Path(config.model).resolve()) if config.model else None,
            "base_model_path": base_name, "fc_token_ids": token_ids, "max_length": config.max_length}
    save_config(config, out)

    # Wall-clock time of each logged step (kept out of the Trainer's own log lines); earlier runs' times survive
    # a resume through the previous train_log.json.
    times: dict[int, float] = {}
    if resume_from is not None and (out / LOG_NAME).is_file():
        try:
            for row in json.loads((out / LOG_NAME).read_text(encoding="utf-8")).get("steps", []):
                if "time" in row and "step" in row:
                    times[int(row["step"])] = row["time"]
        except (ValueError, TypeError, AttributeError):
            pass
    state: dict[str, Any] = {}

    def write_log(history: list[dict], final: dict | None = None, step: int | None = None) -> None:
        if step is not None:
            times.setdefault(step, round(time.time(), 3))
        doc = {"config": config.to_dict(), "base_model": meta["base_model"] or "embedded SmolLM2-135M-Instruct",
               "device": device, "threads": threads, "bf16": bf16, "fc_token_ids": token_ids,
               "data": {"load": load_report.summary(), **prep.to_dict()},
               "trainable_parameters": state.get("trainable"), "optimizer_groups": state.get("optimizer_groups"),
               "steps": _steps_from_history(history, times)}
        if final is not None:
            doc["summary"] = final
        (out / LOG_NAME).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, trainable_token_indices=token_ids,
                      task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=str(out), max_steps=config.max_steps, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup, weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm, logging_steps=config.logging_steps, save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, seed=config.seed, data_seed=config.seed, bf16=bf16,
        activation_checkpointing=False, max_length=config.max_length, report_to="none",
        dataloader_num_workers=0, disable_tqdm=False, use_cpu=device == "cpu", dataset_num_proc=None,
        save_only_model=False, completion_only_loss=False, assistant_only_loss=False, logging_first_step=True)
    budget, writer = _callbacks(config, write_log)
    trainer_cls = _sft_trainer_class()
    model.config.use_cache = False
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=lora,
                          callbacks=[budget, writer])
    trainer.token_lr = config.token_lr if config.token_lr is not None else config.lr
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    state["trainable"] = {"trainable": trainable, "total": total,
                          "names": sorted({n.split(".default")[0].rsplit(".", 1)[-1] for n, p in
                                           trainer.model.named_parameters() if p.requires_grad})}
    print(f"trainable parameters: {trainable:,} of {total:,} (LoRA + {len(token_ids)} token rows)", file=sys.stderr)
    if resume_from is not None:
        print(f"resuming from {resume_from}", file=sys.stderr)
    t_train = time.time()
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.time() - t_train
    state["optimizer_groups"] = [
        {"lr": g.get("initial_lr", g["lr"]), "weight_decay": g.get("weight_decay", 0.0),
         "parameters": sum(p.numel() for p in g["params"])} for g in trainer.optimizer.param_groups]
    trainer.save_model(str(out))  # the adapter and the tokenizer (tokens and chat template included)
    (out / ADAPTER_META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    steps = _steps_from_history(trainer.state.log_history, times)
    done = trainer.state.global_step
    first_step = (int(resume_from.name.rsplit("-", 1)[-1]) if resume_from else 0)
    run_steps = max(0, done - first_step)
    mean_len = prep.tokens / max(prep.used, 1)
    final = {"global_step": done, "max_steps": config.max_steps, "steps_this_run": run_steps,
             "resumed_from": str(resume_from) if resume_from else None,
             "stopped_by_time_budget": budget.stopped_at is not None,
             "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - t_start, 1),
             "seconds_per_step": round(train_seconds / run_steps, 2) if run_steps else None,
             "approx_tokens_per_second": round(run_steps * config.batch_size * config.grad_accum * mean_len
                                               / train_seconds, 1) if run_steps and train_seconds else None,
             "first_loss": steps[0]["loss"] if steps else None, "last_loss": steps[-1]["loss"] if steps else None,
             "train_loss": output.metrics.get("train_loss")}
    write_log(trainer.state.log_history, final)
    plot = plot_loss(steps, out / PLOT_NAME,
                     title=f"assistant-token loss: LoRA r={config.lora_r} lr={config.lr:g}, token rows lr="
                           f"{trainer.token_lr:g}, {config.batch_size * config.grad_accum} conv/step")
    if budget.stopped_at is not None:
        print(f"stopped by the {config.max_minutes:g}-minute budget at step {done}/{config.max_steps}; "
              f"continue with --resume", file=sys.stderr)
    return TrainResult(out=out, global_step=done, log_path=out / LOG_NAME, plot_path=plot,
                       stopped_by_time_budget=budget.stopped_at is not None, metrics=final)


__all__ = ["train", "TrainConfig", "TrainResult", "Features", "build_features", "encode_conversation",
           "prepare_dataset", "prepare_features", "trained_turns", "fc_token_ids", "auto_threads",
           "plot_loss", "PrepReport"]
