"""The same tool grammar for a serving engine: vLLM, SGLang or llama.cpp.

    fragment = export_grammar(tools, "vllm", tokenizer)     # a dict: pass it as the request's extra_body
    client.chat.completions.create(..., extra_body=fragment["extra_body"])

Every engine gets the grammar `compile_tools` built, with one change: the trigger is written as its token id
(`<[49154]>`), the spelling llguidance (vLLM's and SGLang's `guidance` backend, llama.cpp's `%llguidance`) and
xgrammar (their default backend) both read as "this special token" — a quoted "[TOOL_CALLS]" would ask for the
characters, which a special token never spells. vLLM and SGLang apply a request grammar from the first token
(the call is required); llama.cpp can wait for the trigger (a lazy grammar), which is our `auto`. What is lost
there: our fast-forward of forced tokens, and the duplicate-call roll-back.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import ConstrainedFCError
from .schema_compiler import lark_literal
from .tool_grammar import ToolGrammar, compile_tools

ENGINES = ("vllm", "sglang", "llama.cpp")


def engine_lark(grammar: ToolGrammar, tokenizer) -> str:
    """The full grammar (trigger included) with the trigger spelled as its special-token id."""
    if not grammar.trigger:
        return grammar.lark  # the python format has no trigger token
    ids = tokenizer.encode(grammar.trigger, add_special_tokens=False)
    if len(ids) != 1:
        raise ConstrainedFCError(f"the trigger {grammar.trigger!r} is not one token in this tokenizer "
                                 f"({len(ids)} tokens): add it with add_function_calling_tokens first")
    literal = lark_literal(grammar.trigger)
    start = next((i for i, line in enumerate(grammar.lark.splitlines()) if line.startswith("start:")), None)
    lines = grammar.lark.splitlines()
    if start is None or literal not in lines[start]:
        raise ConstrainedFCError("the grammar's start rule does not begin with the trigger")
    lines[start] = lines[start].replace(literal, f"<[{ids[0]}]>", 1)
    return "\n".join(lines) + "\n"


def export_grammar(tools: Any, engine: str, tokenizer, **compile_options) -> dict:
    """What `engine` takes to hold a call to the grammar of `tools` (a tools list or a compiled `ToolGrammar`):
    `{"engine", "grammar", "extra_body"}`; for llama.cpp `extra_body` is the `/completion` (or chat) request's
    grammar fields. `compile_options` go to `compile_tools` (format, parallel, max_calls, ...)."""
    if engine not in ENGINES:
        raise ConstrainedFCError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    grammar = tools if isinstance(tools, ToolGrammar) else compile_tools(tools, warn=False, **compile_options)
    text = engine_lark(grammar, tokenizer)
    fmt = grammar.call_format
    if engine == "vllm":
        # vLLM >= 0.12 reads `structured_outputs`; earlier releases the `guided_grammar` field.
        body = {"structured_outputs": {"grammar": text}}
        legacy = {"guided_grammar": text}
        out = {"engine": engine, "grammar": text, "extra_body": body, "extra_body_before_0_12": legacy}
        if fmt.vllm_parser:  # so the server reads the call list back into `tool_calls`
            out["server_flags"] = ["--enable-auto-tool-choice", "--tool-call-parser", fmt.vllm_parser]
        return out
    if engine == "sglang":
        # SGLang passes `ebnf` to its grammar backend; start it with --grammar-backend llguidance for Lark.
        flags = ["--grammar-backend", "llguidance"]
        if fmt.sglang_parser:
            flags += ["--tool-call-parser", fmt.sglang_parser]
        return {"engine": engine, "grammar": text, "extra_body": {"ebnf": text}, "server_flags": flags}
    trigger_id = tokenizer.convert_tokens_to_ids(grammar.trigger) if grammar.trigger else None
    body: dict = {"grammar": "%llguidance {}\n" + text}
    if grammar.trigger:
        # Lazy: free text until the trigger token, then the grammar (which begins with that token).
        body["grammar_lazy"] = True
        body["grammar_triggers"] = [{"type": "token", "value": grammar.trigger, "token": trigger_id}]
    return {"engine": engine, "grammar": body["grammar"], "extra_body": body}


def dumps(fragment: dict) -> str:
    return json.dumps(fragment, indent=2, ensure_ascii=False)
