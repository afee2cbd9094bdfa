"""constrained_fc: grammar-constrained function calling for small language models.

tools -> normalise (tools.py) -> JSON Schema IR (schema_ir.py) -> Lark grammar (schema_compiler.py,
tool_grammar.py) -> token matcher (matcher.py, llguidance) -> decoding (logits_processor.py, decoding.py,
agent.py) -> parsed, validated tool calls.

The compiler half imports no torch; the runtime half is loaded on first use.
"""
from importlib import import_module

from .errors import (ConstrainedFCError, ContextLengthError, GrammarMismatchError, ToolSchemaError,
                     UnsupportedKeywordError)
from .schema_compiler import Grammar, RelaxedSchemaWarning, compile_schema
from .tool_grammar import ToolGrammar, compile_tools
from .tools import Tool, ToolCall, normalize_tools

__version__ = "0.1.0"

_LAZY = {
    "TokenMatcher": "matcher",
    "ToolCallLogitsProcessor": "logits_processor",
    "generate": "decoding",
    "Result": "decoding",
    "run_agent": "agent",
    "load_model": "model",
    "export_grammar": "export",
    "PromptCache": "prompt_cache",
    "ToolIndex": "retrieval",
}

__all__ = ["compile_tools", "compile_schema", "ToolGrammar", "Grammar", "ToolCall", "Tool", "normalize_tools",
           "ConstrainedFCError", "ContextLengthError", "ToolSchemaError", "UnsupportedKeywordError", "GrammarMismatchError",
           "RelaxedSchemaWarning", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'constrained_fc' has no attribute {name!r}")
