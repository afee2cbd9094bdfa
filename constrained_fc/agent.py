"""Stage 6: Think -> Act -> Observe. Generate, execute the returned calls with the user's Python callables,
append their results as `tool` messages, and continue until the model answers in text or `max_steps`."""
from __future__ import annotations

import inspect
import json
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .decoding import Result, generate
from .errors import ConstrainedFCError
from .tools import ToolCall, normalize_tools


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


def execute(call: ToolCall, table: Mapping[str, Callable]) -> Any:
    """Run one call. Never raises: an invalid call's validation error, an unknown name, or an exception in
    the user's function becomes an error result the model sees."""
    if not call.valid:
        return {"error": f"invalid arguments, not executed: {call.error}"}
    fn = table.get(call.name)
    if fn is None:
        return {"error": f"unknown function {call.name!r}"}
    try:
        out = fn(**call.arguments)
    except Exception as e:  # the model must see the failure and may retry
        return {"error": f"{type(e).__name__}: {e}"}
    try:
        json.dumps(out)
        return out
    except TypeError:
        return str(out)


def run_agent(model, tokenizer, messages, tools, functions, *, max_steps: int = 5, tool_choice: Any = "auto",
              **generate_kwargs) -> AgentResult:
    """`functions`: a dict name -> callable, a list of callables (matched by `__name__`) or a module.
    `tool_choice` applies to the first step; later steps use "auto" so the model can answer in text.
    Calls of one step (parallel calls) run in order; results feed the next step (nested calls)."""
    table = _function_table(functions)
    names = [t.name for t in normalize_tools(tools)]
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
            output = execute(call, table)
            step.executed.append((call, output))
            messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                             "content": json.dumps(output, ensure_ascii=False)})
        choice = "auto"
    return AgentResult(messages, steps, "max_steps")


def signature_tool(fn: Callable) -> dict:
    """A minimal tool definition from a Python function's signature (str/int/float/bool annotations)."""
    kinds = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
    props, required = {}, []
    for p in inspect.signature(fn).parameters.values():
        props[p.name] = {"type": kinds[p.annotation]} if p.annotation in kinds else {}
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
    return {"type": "function", "function": {"name": fn.__name__, "description": (fn.__doc__ or "").strip(),
                                             "parameters": {"type": "object", "properties": props,
                                                            "required": required}}}
