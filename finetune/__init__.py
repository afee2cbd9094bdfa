"""finetune: teach a small model the tool-calling format of constrained_fc with LoRA.

The model learns to read tools between ``[AVAILABLE_TOOLS]`` and ``[/AVAILABLE_TOOLS]``, to answer with
``[TOOL_CALLS]`` and a JSON call list, and to use results given between ``[TOOL_RESULTS]`` and
``[/TOOL_RESULTS]``. This package holds the data side:

* `finetune.data`: the `Example` record, loaders for three input formats (each reporting and skipping bad
  records in a `LoadReport`), schema validation of gold calls, and train/eval splits (random, held-out tools,
  held-out question templates);
* `finetune.synth` with ``catalogue.json``: deterministic synthetic conversations covering single, parallel,
  nested and multi-turn calls, and requests no tool fits;
* ``python -m finetune``: the command line (``synth``, ``data-check``).

Nothing here imports torch, so data can be prepared on a machine without an accelerator.
"""
from .data import (Example, LoadReport, RecordError, infer_objective, load_examples, split_examples,
                   validate_example, write_jsonl)
from .synth import Catalogue, CatalogueError, load_catalogue, synthesize

__all__ = ["Example", "LoadReport", "RecordError", "load_examples", "split_examples", "validate_example",
           "infer_objective", "write_jsonl", "Catalogue", "CatalogueError", "load_catalogue", "synthesize"]
