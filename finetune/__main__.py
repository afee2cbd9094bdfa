"""Command line of the fine-tuning package: ``python -m finetune <command>``.

* ``synth``: generate synthetic examples from a tool catalogue and write ``train.jsonl`` / ``eval.jsonl``;
* ``data-check PATH``: load a data file in any supported format and report what loads and what is skipped;
* ``train``: LoRA fine-tuning with TRL's SFTTrainer (adapter, checkpoints, train_log.json, loss.png);
* ``merge``: fold an adapter into its base model, giving a standalone model folder;
* ``evaluate``: tool-calling scores (held-out split, BFCL) before / after, with the shared checker.

Each command is registered by an ``_add_<command>`` function below; further commands plug in the same way.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from .data import HOLDOUTS, OBJECTIVES, load_examples, split_examples, write_jsonl
from .synth import CatalogueError, load_catalogue, synthesize


def _objective_table(columns: dict[str, list]) -> str:
    counts = {name: Counter(ex.meta.get("objective", "?") for ex in exs) for name, exs in columns.items()}
    names = list(columns)
    rows = [f"{'objective':<10}" + "".join(f"{n:>8}" for n in names)]
    for obj in list(OBJECTIVES) + sorted(set().union(*counts.values()) - set(OBJECTIVES)):
        if any(counts[n][obj] for n in names):
            rows.append(f"{obj:<10}" + "".join(f"{counts[n][obj]:>8}" for n in names))
    rows.append(f"{'total':<10}" + "".join(f"{len(columns[n]):>8}" for n in names))
    return "\n".join(rows)


def _cmd_synth(args: argparse.Namespace) -> int:
    try:
        catalogue = load_catalogue(args.catalogue)
        examples = synthesize(catalogue, args.n, seed=args.seed)
        train, evals = split_examples(examples, args.eval_fraction, seed=args.seed, holdout=args.holdout)
    except (CatalogueError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(evals, out / "eval.jsonl")
    print(f"catalogue: {catalogue.source} ({len(catalogue)} tools); seed {args.seed}; holdout {args.holdout}")
    print(f"wrote {len(train)} train and {len(evals)} eval examples to {out}")
    if args.holdout == "tools":
        seen = {name for ex in train for name in ex.called_tools}
        held = sorted({name for ex in evals for name in ex.called_tools} - seen)
        print(f"held-out tools: {', '.join(held)}")
    print(_objective_table({"train": train, "eval": evals}))
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate synthetic train/eval data from a tool catalogue",
                       description="Write DIR/train.jsonl and DIR/eval.jsonl of synthetic tool-calling examples.")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--n", type=int, default=2000, help="number of examples in all (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    p.add_argument("--catalogue", metavar="FILE", default=None,
                   help="tool catalogue JSON (default: the packaged finetune/catalogue.json)")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="share of examples for eval (default 0.1)")
    p.add_argument("--holdout", choices=HOLDOUTS, default="random",
                   help="random examples, whole tools never seen in train, or whole question templates")
    p.set_defaults(func=_cmd_synth)


def _cmd_data_check(args: argparse.Namespace) -> int:
    try:
        examples, report = load_examples(args.path, format=args.format)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    for line in report.errors[:args.max_errors]:
        print(f"  {line}")
    if len(report.errors) > args.max_errors:
        print(f"  ... and {len(report.errors) - args.max_errors} more")
    if examples:
        print(_objective_table({"loaded": examples}))
    if not examples or (args.strict and report.skipped):
        return 1
    return 0


def _add_data_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data-check", help="load a data file and report loaded / skipped records",
                       description="Load PATH with finetune.data.load_examples and print the report.")
    p.add_argument("path", metavar="PATH", help=".jsonl or .json data file")
    p.add_argument("--format", default="auto",
                   help="auto (default), function_call, messages or sharegpt (aliases: training, openai, "
                        "mistral, glaive)")
    p.add_argument("--max-errors", type=int, default=20, help="skipped records to list (default 20)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if any record is skipped")
    p.set_defaults(func=_cmd_data_check)


_TRAIN_FLAGS = (
    # (flag, type, help); every default lives in finetune.config.TrainConfig
    ("--max-steps", int, "optimizer steps"),
    ("--batch-size", int, "conversations per forward pass"),
    ("--grad-accum", int, "forward passes per optimizer step"),
    ("--lr", float, "peak learning rate of the LoRA matrices"),
    ("--token-lr", float, "peak learning rate of the five function-calling token rows"),
    ("--lr-scheduler", str, "transformers scheduler name (cosine, linear, constant_with_warmup...)"),
    ("--warmup", float, "warmup: a share of max_steps (< 1) or a step count"),
    ("--max-length", int, "tokens per conversation (longer ones lose distractor tools, then trailing turns)"),
    ("--tools-in", str, "where the chat template lists the tools: first (default) or last user message"),
    ("--lora-r", int, "LoRA rank"),
    ("--lora-alpha", int, "LoRA alpha"),
    ("--lora-dropout", float, "LoRA dropout"),
    ("--save-steps", int, "checkpoint every N optimizer steps"),
    ("--save-total-limit", int, "checkpoints to keep"),
    ("--logging-steps", int, "log the loss every N steps"),
    ("--max-examples", int, "use at most N conversations (default: as many as max_steps consumes)"),
    ("--max-minutes", float, "stop (with a checkpoint) after this many minutes of training; 0: no limit"),
    ("--threads", int, "torch CPU threads (0: automatic)"),
    ("--seed", int, "random seed"),
    ("--format", str, "data format (auto, function_call, messages, sharegpt)"),
)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import ConfigError, build_config

    flags = {"data": args.data, "out": args.out, "model": args.model, "resume": True if args.resume else None,
             "bf16": args.bf16, "target_modules": args.target_modules}
    for flag, _, _ in _TRAIN_FLAGS:
        name = flag[2:].replace("-", "_")
        flags[name] = getattr(args, name)
    try:
        config = build_config(flags, args.config)
        if args.print_config:
            import yaml
            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return 0
        from .train import train
        result = train(config)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.metrics
    print(f"adapter: {result.out} (step {result.global_step}/{m['max_steps']}"
          f"{', stopped by the time budget' if result.stopped_by_time_budget else ''})")
    if m["first_loss"] is not None:
        print(f"loss: {m['first_loss']:.4f} -> {m['last_loss']:.4f}; {m['seconds_per_step']} s/step, "
              f"{m['train_seconds']:.0f} s training, {m['total_seconds']:.0f} s in all")
    print(f"log: {result.log_path}" + (f"; loss curve: {result.plot_path}" if result.plot_path else ""))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="LoRA fine-tuning (TRL SFTTrainer + PEFT) on tool-calling data",
                       description="Train LoRA adapters plus the five function-calling token rows on the assistant "
                                   "turns of DATA. Settings: defaults < --config FILE < flags (with --resume, the "
                                   "run's saved train_config.json comes before --config).")
    p.add_argument("--data", metavar="FILE", help="training data (.jsonl/.json in any supported format)")
    p.add_argument("--out", metavar="DIR", help="output folder: adapter, checkpoints, train_log.json, loss.png")
    p.add_argument("--model", metavar="DIR", help="local Hugging Face causal LM folder "
                                                  "(default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings (keys as in train_config.json)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    for flag, typ, text in _TRAIN_FLAGS:
        p.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--target-modules", nargs="+", default=None, metavar="NAME",
                   help="LoRA target modules (default: all-linear)")
    p.add_argument("--bf16", dest="bf16", action="store_true", default=None, help="force bf16 autocast")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32")
    p.add_argument("--print-config", action="store_true", help="print the effective settings as YAML and exit")
    p.set_defaults(func=_cmd_train)


def _cmd_merge(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .merge import merge_adapter

    try:
        out = merge_adapter(args.adapter, args.out, base=args.base)
    except (ConfigError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged model written to {out} (load it with constrained_fc.model.load_model({str(out)!r}) or "
          f"--model {out})")
    return 0


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge an adapter into its base model (standalone model folder)",
                       description="merge_and_unload the adapter in --adapter and save model + tokenizer to --out.")
    p.add_argument("--adapter", required=True, metavar="DIR", help="a train --out folder or a checkpoint-N in it")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write the merged model")
    p.add_argument("--base", metavar="DIR", default=None,
                   help="base model folder (default: the one recorded at training time)")
    p.set_defaults(func=_cmd_merge)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import EvalSettings, markdown, run

    if len(args.model) > 2:
        print("error: give --model once, or twice (before, after)", file=sys.stderr)
        return 2
    if not args.eval and not args.bfcl:
        print("error: nothing to evaluate: pass --eval FILE and/or --bfcl CATEGORY...", file=sys.stderr)
        return 2
    import torch

    from .train import auto_threads
    torch.set_num_threads(auto_threads(args.threads))
    settings = EvalSettings(eval_file=args.eval, bfcl=tuple(args.bfcl or ()), limit=args.limit or None,
                            modes=tuple(args.modes), max_new_tokens=args.max_new_tokens,
                            retention_prompts=args.retention, reuse=not args.no_reuse, dtype=args.dtype,
                            bfcl_data=args.bfcl_data, seed=args.seed, sealtools_unseen=args.sealtools_unseen,
                            reference_model=args.reference_model)
    try:
        results = run(args.model, settings, args.out, labels=args.label, baseline=args.baseline)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(results))
    print(f"written: {Path(args.out) / 'results.json'}, results.md, records.jsonl")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    from constrained_fc.eval.data import BFCL_CATEGORIES

    from .evaluate import MODES

    p = sub.add_parser("evaluate", help="score tool calling (held-out split, BFCL) before / after fine-tuning",
                       description="Unconstrained (model.generate + parse_lenient) and constrained "
                                   "(generate(tool_choice='auto')) decision accuracy, call accuracy and "
                                   "invalid-call rate, with constrained_fc.eval.checker; plus plain-chat retention.")
    p.add_argument("--model", action="append", required=True, metavar="DIR|default|base",
                   help="model or adapter folder, 'default' (the shipped fine-tune) or 'base' (untuned); give "
                        "twice for before / after")
    p.add_argument("--label", action="append", default=None, help="display name per --model, in order")
    p.add_argument("--eval", metavar="FILE", help="held-out conversations (e.g. eval.jsonl of synth --holdout tools)")
    p.add_argument("--bfcl", nargs="*", choices=BFCL_CATEGORIES, default=None, metavar="CATEGORY",
                   help=f"BFCL v3 categories ({', '.join(BFCL_CATEGORIES)})")
    p.add_argument("--bfcl-data", metavar="DIR", default=None, help="data folder holding bfcl/ (default: shared)")
    p.add_argument("--limit", type=int, default=20,
                   help="items per set (held-out turns / BFCL questions); 0: every item")
    p.add_argument("--out", metavar="DIR", default="runs/eval", help="output folder (default runs/eval)")
    p.add_argument("--baseline", metavar="FILE", help="an earlier results.json to compare against (the 'before')")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="decoding modes")
    p.add_argument("--max-new-tokens", type=int, default=128, help="reply budget per item (default 128)")
    p.add_argument("--retention", type=int, default=80,
                   help="MT-Bench first turns for the retention check (0-80, default all)")
    p.add_argument("--reference-model", default=None, metavar="DIR|base",
                   help="model whose greedy answers are the retention references (default: the first --model)")
    p.add_argument("--sealtools-unseen", action="store_true",
                   help="also score Seal-Tools out-of-domain requests whose tools training never saw")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="weights dtype for evaluation (bfloat16 is ~2x faster on CPUs with AMX/AVX512-BF16)")
    p.add_argument("--no-reuse", action="store_true",
                   help="always decode the constrained mode, even when the unconstrained reply has no trigger")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: automatic)")
    p.add_argument("--seed", type=int, default=0, help="order of held-out conversations")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_build(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .recipe import _cmd, build

    try:
        record = build(args.recipe, args.out, None if args.no_ship else args.ship, data_dir=args.data,
                       command=_cmd())
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = record["metrics"]
    print(f"adapter: {args.out} (step {m['global_step']}/{m['max_steps']}); "
          f"shipped to {args.ship}" if not args.no_ship else f"adapter: {args.out}")
    return 0


def _add_build(sub: argparse._SubParsersAction) -> None:
    from constrained_fc.model import SHIPPED_ADAPTER

    p = sub.add_parser("build", help="recipe -> data mixture -> training -> the shipped adapter (one command)",
                       description="Build the adapter a recipe describes: base-model answers for the chat "
                                   "data, the mixture, LoRA training (resumed from the last checkpoint in --out "
                                   "when there is one), and export into the package with a model card.")
    p.add_argument("--recipe", required=True, metavar="FILE", help="recipe YAML (finetune/recipes/*.yaml)")
    p.add_argument("--out", default="runs/smollm2-fc", metavar="DIR",
                   help="working folder: data, checkpoints, logs (default runs/smollm2-fc)")
    p.add_argument("--ship", default=str(SHIPPED_ADAPTER), metavar="DIR",
                   help="where the exported adapter goes (default: the package's shipped adapter)")
    p.add_argument("--no-ship", action="store_true", help="train only; leave the shipped adapter alone")
    p.add_argument("--data", metavar="DIR", default=None, help="shared data folder (default: ../shared/data or "
                                                               "$CONSTRAINED_FC_DATA)")
    p.set_defaults(func=_cmd_build)


def _cmd_card(args: argparse.Namespace) -> int:
    from .recipe import refresh_card

    try:
        print(f"wrote {refresh_card(args.ship, args.results)}")
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _add_card(sub: argparse._SubParsersAction) -> None:
    from constrained_fc.model import SHIPPED_ADAPTER

    p = sub.add_parser("card", help="put a measured results table into an exported adapter's model card")
    p.add_argument("--results", required=True, metavar="FILE", help="results.md written by `evaluate`")
    p.add_argument("--ship", default=str(SHIPPED_ADAPTER), metavar="DIR", help="exported adapter folder")
    p.set_defaults(func=_cmd_card)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log every skipped record and decision")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(sub)
    _add_data_check(sub)
    _add_train(sub)
    _add_merge(sub)
    _add_evaluate(sub)
    _add_build(sub)
    _add_card(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Skipped records are listed by data-check itself; the log only repeats them when asked to.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
