"""finetune: teach a small model the tool-calling format of constrained_fc with LoRA, and build the shipped adapter.

The model learns to read tools between ``[AVAILABLE_TOOLS]`` and ``[/AVAILABLE_TOOLS]``, to answer with
``[TOOL_CALLS]`` and a JSON call list, and to use results given between ``[TOOL_RESULTS]`` and
``[/TOOL_RESULTS]``; and, as much, when *not* to call. The stages, one module each:

* `finetune.data`: the `Example` record, loaders for three input formats (each reporting and skipping bad
  records in a `LoadReport`), schema validation of gold calls, and train/eval splits;
* `finetune.sources`: readers for the public sources (Seal-Tools, API-Bank, Glaive, self-instruct / MT-Bench
  prompts), Python-style types mapped to JSON Schema;
* `finetune.synth` with ``catalogue.json``: deterministic synthetic conversations;
* `finetune.chat_answers`: the base model's own answers to tool-free prompts (retention targets), cached;
* `finetune.mix`: the mixture a recipe's ``data`` section describes (shares, distractors, no-call examples,
  BFCL / MT-Bench / held-out-tool filters);
* `finetune.train` (TRL + PEFT), `finetune.merge`, `finetune.evaluate`;
* `finetune.recipe`: ``python -m finetune build --recipe FILE``, recipe -> data -> training -> shipped adapter.

Only `train`, `merge`, `evaluate`, `chat_answers` and `recipe` import torch.
"""
from .data import (Example, LoadReport, RecordError, infer_objective, load_examples, split_examples,
                   validate_example, write_jsonl)
from .synth import Catalogue, CatalogueError, load_catalogue, synthesize

__all__ = ["Example", "LoadReport", "RecordError", "load_examples", "split_examples", "validate_example",
           "infer_objective", "write_jsonl", "Catalogue", "CatalogueError", "load_catalogue", "synthesize"]
