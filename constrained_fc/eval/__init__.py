"""Evaluation shared by finetune/ and benchmarks/: the BFCL loader and BFCL's AST checker with the
lenient parser and hallucination classifier."""
