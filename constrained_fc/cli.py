"""The `constrained-fc` command: demo, call, grammar, chat, serve. Bad input prints one clear line and exits 2."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .compiler.formats import DEFAULT_FORMAT, FORMATS  # noqa: E402
from .errors import ConstrainedFCError  # noqa: E402

DEMO_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the weather forecast for a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7, "description": "Days ahead"}},
            "required": ["city", "unit"]}}},
    {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert an amount between currencies.",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number", "minimum": 0},
            "from_currency": {"type": "string", "enum": ["USD", "EUR", "GBP", "JPY"]},
            "to_currency": {"type": "string", "enum": ["USD", "EUR", "GBP", "JPY"]}},
            "required": ["amount", "from_currency", "to_currency"]}}},
    {"type": "function", "function": {
        "name": "send_email", "description": "Send an email.",
        "parameters": {"type": "object", "properties": {
            "to": {"type": "string", "format": "email"}, "subject": {"type": "string", "maxLength": 60},
            "body": {"type": "string"}}, "required": ["to", "subject"]}}},
]
DEMO_QUESTION = "What will the weather be like in Paris over the next 3 days, in celsius?"


class CLIError(Exception):
    pass


def _read_json(path: str, what: str):
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what} file not found: {path}")
    try:
        return json.loads(p.read_text("utf-8"))
    except UnicodeDecodeError as e:
        raise CLIError(f"{what} file {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise CLIError(f"{what} file {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
    except RecursionError:
        raise CLIError(f"{what} file {path} nests deeper than the JSON reader can follow") from None


def _load_tools(path: str):
    from .compiler.tools import normalize_tools
    data = _read_json(path, "tools")
    return [t.to_openai() for t in normalize_tools(data)]


def _tool_choice(value: str):
    return value if value in ("auto", "required", "none") else {"type": "function", "function": {"name": value}}


def _load_model(path: str | None):
    from .model import load_model
    return load_model(path)


def _generate_kwargs(args) -> dict:
    from .compiler.options import Options
    return dict(options=Options(format=args.format, strict=args.strict), max_new_tokens=args.max_new_tokens,
                fast_forward=not args.no_fast_forward, retrieve=args.retrieve)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def cmd_grammar(args) -> int:
    from .compiler.tool_grammar import compile_tools
    g = compile_tools(_load_tools(args.tools), format=args.format or DEFAULT_FORMAT, parallel=not args.single,
                      tool_choice=_tool_choice(args.tool_choice), whitespace=args.whitespace, strict=args.strict)
    if args.engine:
        from .compiler.export import dumps, export_grammar
        if args.tokenizer:
            from transformers import AutoTokenizer
            from .chat import add_function_calling_tokens
            if not Path(args.tokenizer).is_dir():
                raise CLIError(f"tokenizer directory not found: {args.tokenizer}")
            tok = AutoTokenizer.from_pretrained(args.tokenizer)
            add_function_calling_tokens(tok)
        else:
            from .model import load_default_tokenizer
            tok = load_default_tokenizer()
        print(dumps(export_grammar(g, args.engine, tok)))
        return 0
    sys.stdout.write(g.lark)
    return 0


def cmd_call(args) -> int:
    from .runtime.decoding import generate
    tools = _load_tools(args.tools)
    model, tok = _load_model(args.model)
    messages = [{"role": "user", "content": args.prompt}]
    result = generate(model, tok, messages, tools, tool_choice=_tool_choice(args.tool_choice),
                      **_generate_kwargs(args))
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    return 0


def _panel(title: str, body: str, width: int = 38) -> list[str]:
    lines = [title, "-" * width]
    for para in body.splitlines() or [""]:
        lines += textwrap.wrap(para, width) or [""]
    return lines


DEMO_NO_TOOL_QUESTION = "Write a haiku about the sea."


def _marked(tok, result) -> str:
    """The generated text with the grammar's forced tokens in «...» and the trigger called out."""
    out, run = [], []
    for tid, forced in zip(result.token_ids, result.forced):
        piece = tok.decode([tid], skip_special_tokens=False)
        if forced:
            run.append(piece)
            continue
        if run:
            out.append("«" + "".join(run) + "»")
            run = []
        out.append(piece)
    if run:
        out.append("«" + "".join(run) + "»")
    return "".join(out)


def cmd_demo(args) -> int:
    from .chat import TOOL_CALLS, render_prompt
    from .eval.checker import parse_lenient
    from .runtime.decoding import generate
    import torch
    model, tok = _load_model(args.model)
    print(f"model: {args.model or 'the shipped fine-tune (SmolLM2-135M-Instruct + smollm2-fc adapter)'}; "
          f"tool_choice={args.tool_choice}")
    print(f"tools: {', '.join(t['function']['name'] for t in DEMO_TOOLS)}")
    trigger_id = tok.convert_tokens_to_ids(TOOL_CALLS)
    for question in ([args.question] if args.question else [DEMO_QUESTION, DEMO_NO_TOOL_QUESTION]):
        messages = [{"role": "user", "content": question}]
        print(f"\n=== question: {question}\n")
        prompt = render_prompt(tok, messages, DEMO_TOOLS)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                                 do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        raw = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=False).replace(tok.eos_token, "").strip()
        lenient = parse_lenient(raw)
        result = generate(model, tok, messages, DEMO_TOOLS, tool_choice=_tool_choice(args.tool_choice),
                          **_generate_kwargs(args))
        where = (f"the model wrote {TOOL_CALLS} at token {result.token_ids.index(trigger_id) + 1}; the grammar "
                 "took over" if trigger_id in result.token_ids else "no trigger: the model answered in text")
        left = _panel("UNCONSTRAINED model.generate", raw + "\n\nparsed calls: " + json.dumps(lenient))
        right = _panel("CONSTRAINED constrained_fc.generate", _marked(tok, result) + "\n\n" + where
                       + "\nfinish_reason: " + result.finish_reason)
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            print(f"{a:<40}| {b}")
        if result.tool_calls:
            print("\nparsed, validated calls:")
            for c in result.tool_calls:
                status = "valid" if c.valid else f"INVALID: {c.error}"
                print(f"  {c.name}({json.dumps(c.arguments, ensure_ascii=False)})  [{status}]")
        s = result.stats
        print(f"\nstats: {s.tokens_generated} tokens ({s.tokens_forced} forced by the grammar, shown in «...»: "
              f"{100 * s.forced_share:.0f}%), {s.forward_passes} forward passes, prompt {s.prompt_ms:.0f} ms, "
              f"decode {s.decode_ms:.0f} ms, mask {s.mask_us_per_token:.0f} us/token")
    return 0


def _load_functions(path: str):
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"functions module not found: {path}")
    spec = importlib.util.spec_from_file_location(p.stem, p)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise CLIError(f"cannot import functions module {path}: {type(e).__name__}: {e}")
    return module


def cmd_chat(args) -> int:
    from .agent import run_agent
    from .runtime.decoding import generate
    tools = _load_tools(args.tools)
    functions = _load_functions(args.functions) if args.functions else None
    model, tok = _load_model(args.model)
    messages: list = []
    print("constrained-fc chat: empty line or Ctrl-D to quit")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        messages.append({"role": "user", "content": line})
        if functions is not None:
            res = run_agent(model, tok, messages, tools, functions, tool_choice=_tool_choice(args.tool_choice),
                            **_generate_kwargs(args))
            for step in res.steps:
                for call, output in step.executed:
                    print(f"  call {call.name}({json.dumps(call.arguments, ensure_ascii=False)}) -> "
                          f"{json.dumps(output, ensure_ascii=False)}")
            messages = res.messages
            print(f"model> {res.answer}")
        else:
            result = generate(model, tok, messages, tools, tool_choice=_tool_choice(args.tool_choice),
                              **_generate_kwargs(args))
            messages.append(result.to_message())
            if result.content:
                print(f"model> {result.content}")
            for c in result.tool_calls:
                print(f"  call {c.name}({json.dumps(c.arguments, ensure_ascii=False)})"
                      + ("" if c.valid else f"  [INVALID: {c.error}]"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="constrained-fc", description="Grammar-constrained function calling.")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, model=True):
        p.add_argument("--format", choices=list(FORMATS), default=None,
                       help="call format (default: the tokenizer's native one, else mistral)")
        p.add_argument("--tool-choice", default="auto", help="auto | required | none | a function name")
        if model:
            p.add_argument("--model", default=None,
                           help="'base' (the untuned SmolLM2-135M-Instruct), a local model or LoRA adapter "
                                "directory (default: the shipped fine-tune)")
            p.add_argument("--max-new-tokens", type=int, default=128)
            p.add_argument("--no-fast-forward", action="store_true")
            p.add_argument("--strict", action="store_true", help="error on keywords the grammar cannot express")
            p.add_argument("--retrieve", type=_positive, default=None, metavar="K",
                           help="a large tools file: offer each turn only the K tools that best match the "
                                "request (hybrid dense + BM25 retrieval)")

    p = sub.add_parser("demo", help="unconstrained vs constrained answer on the embedded model")
    common(p)
    p.add_argument("--question", default=None,
                   help="one question (default: one that needs a tool and one that does not)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("call", help="print the model's calls as JSON")
    common(p)
    p.add_argument("--tools", required=True)
    p.add_argument("--prompt", required=True)
    p.set_defaults(func=cmd_call)
    p = sub.add_parser("grammar", help="print the Lark grammar of a tools file")
    common(p, model=False)
    p.add_argument("--tools", required=True)
    p.add_argument("--single", action="store_true", help="exactly one call (no parallel calls)")
    p.add_argument("--whitespace", choices=["canonical", "flexible"], default="canonical")
    p.add_argument("--strict", action="store_true", help="error on keywords the grammar cannot express")
    p.add_argument("--engine", choices=["vllm", "sglang", "llama.cpp"], default=None,
                   help="print the request fragment that engine takes (JSON) instead of the Lark text")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="with --engine: the served model's tokenizer, for the trigger's token id "
                        "(default: the embedded SmolLM2 tokenizer)")
    p.set_defaults(func=cmd_grammar)
    p = sub.add_parser("chat", help="interactive loop; with --functions, calls are executed")
    common(p)
    p.add_argument("--tools", required=True)
    p.add_argument("--functions", default=None, help="a Python file whose functions implement the tools")
    p.set_defaults(func=cmd_chat)
    p = sub.add_parser("serve", help="an OpenAI-compatible chat-completions server (loopback by default)")
    p.add_argument("--model", default=None, help="'base', a local model or adapter directory (default: the "
                                                 "shipped fine-tune)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-queue", type=int, default=64, help="requests that may wait; beyond it, 429")
    p.add_argument("--retrieve", type=_positive, default=None, metavar="K",
                   help="offer each request only the K of its tools that best match it (a request's "
                        "\"retrieve\" field overrides this)")
    p.set_defaults(func=cmd_serve)
    return ap


def cmd_serve(args) -> int:
    try:
        from .server import serve
    except ImportError as e:
        raise CLIError(f"the server needs its extra: pip install 'constrained_fc[serve]' ({e.name} missing)")
    if not 0 < args.port < 65536:
        raise CLIError(f"--port must be in 1..65535, got {args.port}")
    if args.max_queue < 1:
        raise CLIError(f"--max-queue must be at least 1, got {args.max_queue}")
    serve(args.model, host=args.host, port=args.port, max_queue=args.max_queue, retrieve=args.retrieve)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ConstrainedFCError, FileNotFoundError) as e:
        print(f"constrained-fc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
