"""constrained_fc: grammar-constrained function calling for small language models.

compiler/ (tools -> normalised Tool -> JSON Schema IR -> Lark grammar text) -> runtime/ (plan -> llguidance
matcher -> our fast-forward loop or the HF processor -> read-back of validated calls) -> agent / server / cli.
eval/ holds the BFCL loader and checker shared by finetune/ and benchmarks/.

The compiler imports no torch; the runtime is loaded on first use.
"""
from importlib import import_module

from .compiler.options import Options
from .compiler.schema_compiler import Grammar, RelaxedSchemaWarning, compile_schema
from .compiler.tool_grammar import ToolGrammar, compile_tools
from .compiler.tools import Tool, ToolCall, normalize_tools
from .errors import (ConstrainedFCError, ContextLengthError, GrammarMismatchError, ToolSchemaError,
                     UnsupportedKeywordError)

__version__ = "0.1.0"

_LAZY = {
    "TokenMatcher": "runtime.matcher",
    "ToolCallLogitsProcessor": "runtime.logits_processor",
    "generate": "runtime.decoding",
    "Result": "runtime.decoding",
    "run_agent": "agent",
    "load_model": "model",
    "export_grammar": "compiler.export",
    "PromptCache": "runtime.prompt_cache",
    "ToolIndex": "retrieval",
}

__all__ = ["compile_tools", "compile_schema", "Options", "ToolGrammar", "Grammar", "ToolCall", "Tool", "normalize_tools",
           "ConstrainedFCError", "ContextLengthError", "ToolSchemaError", "UnsupportedKeywordError", "GrammarMismatchError",
           "RelaxedSchemaWarning", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'constrained_fc' has no attribute {name!r}")
