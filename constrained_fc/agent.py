"""Stage 6: Think -> Act -> Observe. Generate, execute the returned calls with the user's Python callables,
append their results as `tool` messages, and continue until the model answers in text or `max_steps`."""
from __future__ import annotations

import json
import math
import threading
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .runtime.decoding import Result, generate
from .errors import ConstrainedFCError
from .retrieval import ToolIndex, index_for
from .compiler.tools import ToolCall, normalize_tools


@dataclass
class Step:
    result: Result
    executed: list = field(default_factory=list)  # list of (ToolCall, output) pairs, output JSON-able


@dataclass
class AgentResult:
    messages: list
    steps: list  # list[Step]
    finish_reason: str  # "stop" (answered in text), "max_steps" or "length"

    @property
    def answer(self) -> str:
        return self.steps[-1].result.content if self.steps else ""


def _function_table(functions: Any) -> dict[str, Callable]:
    if isinstance(functions, types.ModuleType):
        return {n: f for n, f in vars(functions).items() if callable(f) and not n.startswith("_")
                and getattr(f, "__module__", None) == functions.__name__}
    if isinstance(functions, Mapping):
        return dict(functions)
    table = {}
    for f in functions or []:
        table[getattr(f, "__name__", repr(f))] = f
    return table


# What a tool may hand back to the model (README, "Guarantees"): any Python value becomes JSON text of at most
# `max_result_chars` characters, produced within `tool_timeout` seconds.
DEFAULT_TOOL_TIMEOUT = 30.0
DEFAULT_MAX_RESULT_CHARS = 4000
_MAX_RESULT_DEPTH = 32


def _describe(value: Any) -> str:
    """str(value), or a placeholder when its __str__ (and __repr__) fail."""
    for fn in (str, repr):
        try:
            return fn(value)
        except Exception:
            continue
    return f"<unprintable {type(value).__name__}>"


def to_jsonable(value: Any, _depth: int = 0, _seen: frozenset = frozenset()) -> Any:
    """Any tool output as plain JSON data: containers are copied (a cycle becomes "<circular>", depth beyond
    32 becomes its text), NaN and infinities become the strings "NaN" / "Infinity" / "-Infinity" (JSON has no
    such numbers), anything else its `str()`."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ("NaN" if value != value else ("Infinity" if value > 0
                                                                                 else "-Infinity"))
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in _seen:
            return "<circular>"
        if _depth >= _MAX_RESULT_DEPTH:
            return _describe(value)
        seen = _seen | {id(value)}
        if isinstance(value, Mapping):
            return {k if isinstance(k, str) else _describe(k): to_jsonable(v, _depth + 1, seen)
                    for k, v in value.items()}
        return [to_jsonable(v, _depth + 1, seen) for v in value]
    return _describe(value)


def result_text(output: Any, max_chars: int | None = DEFAULT_MAX_RESULT_CHARS) -> str:
    """A tool's output as the text of its `tool` message: JSON, cut to `max_chars` characters with a marker
    that says how much was left out (so a 1 MB result cannot become a 250k-token prompt)."""
    text = json.dumps(to_jsonable(output), ensure_ascii=False, allow_nan=False)
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars] + f"... [truncated: {len(text) - max_chars} more characters]"
    return text


def _call_with_timeout(fn: Callable, arguments: dict, timeout: float | None) -> Any:
    """fn(**arguments), given at most `timeout` seconds. Python cannot stop a thread: a function that times
    out keeps running in a daemon thread, but the agent no longer waits for it."""
    if timeout is None:
        return fn(**arguments)
    box: dict[str, Any] = {}

    def target():
        try:
            box["out"] = fn(**arguments)
        except BaseException as e:  # handed to the caller's thread, which decides
            box["exc"] = e

    t = threading.Thread(target=target, daemon=True, name=f"tool-{getattr(fn, '__name__', 'fn')}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no result within {timeout:g} s")
    if "exc" in box:
        raise box["exc"]
    return box.get("out")


def execute(call: ToolCall, table: Mapping[str, Callable], *, timeout: float | None = DEFAULT_TOOL_TIMEOUT) -> Any:
    """Run one call. Never raises (but for KeyboardInterrupt): an invalid call's validation error, an unknown
    name, a timeout, or an exception in the user's function (SystemExit included) becomes an error result
    the model sees. The output is returned as given; `result_text` makes it JSON."""
    if not call.valid:
        return {"error": f"invalid arguments, not executed: {call.error}"}
    fn = table.get(call.name)
    if fn is None:
        return {"error": f"unknown function {call.name!r}"}
    try:
        return _call_with_timeout(fn, call.arguments, timeout)
    except (Exception, SystemExit) as e:  # the model must see the failure and may retry
        return {"error": f"{type(e).__name__}: {_describe(e)}"}


def run_agent(model, tokenizer, messages, tools, functions, *, max_steps: int = 5, tool_choice: Any = "auto",
              tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT,
              max_result_chars: int | None = DEFAULT_MAX_RESULT_CHARS, **generate_kwargs) -> AgentResult:
    """`functions`: a dict name -> callable, a list of callables (matched by `__name__`) or a module.
    `tool_choice` applies to the first step; later steps use "auto" so the model can answer in text.
    Calls of one step (parallel calls) run in order; results feed the next step (nested calls). Each call
    gets `tool_timeout` seconds (None: no limit) and its result is cut to `max_result_chars` characters.
    With `retrieve=k` (passed on to `generate`), `tools` is a library: each step offers the k tools that best
    match the user's request plus those already called."""
    if tool_timeout is not None and (isinstance(tool_timeout, bool) or not isinstance(tool_timeout, (int, float))
                                     or not tool_timeout > 0):
        raise ConstrainedFCError(f"tool_timeout must be a positive number of seconds or None, got {tool_timeout!r}")
    if max_result_chars is not None and (isinstance(max_result_chars, bool) or not isinstance(max_result_chars, int)
                                         or max_result_chars < 1):
        raise ConstrainedFCError(f"max_result_chars must be a positive integer or None, got {max_result_chars!r}")
    table = _function_table(functions)
    if generate_kwargs.get("retrieve") is not None:
        tools = index_for(tools)  # built (or found) once, not re-hashed at every step
    names = [t.name for t in (tools.tools if isinstance(tools, ToolIndex) else normalize_tools(tools))]
    missing = [n for n in names if n not in table]
    if missing:
        raise ConstrainedFCError(f"no Python function given for tool(s) {missing}")
    for name, fn in table.items():
        if name in names and not callable(fn):
            raise ConstrainedFCError(f"function for tool {name!r} is not callable")
    messages = list(messages)
    steps: list[Step] = []
    choice = tool_choice
    for _ in range(max_steps):
        result = generate(model, tokenizer, messages, tools, tool_choice=choice, **generate_kwargs)
        step = Step(result)
        steps.append(step)
        messages.append(result.to_message())
        if not result.tool_calls:
            return AgentResult(messages, steps, "length" if result.finish_reason == "length" else "stop")
        for call in result.tool_calls:
            output = execute(call, table, timeout=tool_timeout)
            step.executed.append((call, output))
            messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                             "content": result_text(output, max_result_chars)})
        choice = "auto"
    return AgentResult(messages, steps, "max_steps")
