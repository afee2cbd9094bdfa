"""Readers for the public training sources, each turning its own layout into `finetune.data.Example`s.

* Seal-Tools (``sealtools/``): 4,076 tools with Python-style parameter types and 2,054 requests with their
  calls. A request with several independent calls becomes one parallel call list; a request whose later call
  uses an earlier call's result (a value ``"API_call_N"``) would need that result, which the data does not
  hold, so it is skipped (counted as ``nested``).
* API-Bank (``apibank/``): multi-turn dialogues (``user`` / ``agent`` turns) ending in one call.
* Glaive (``glaive/``): ShareGPT conversations, read by `finetune.data.load_examples`.
* Tool-free chat prompts (``chat/``): self-instruct tasks for the retention data; MT-Bench questions (kept for
  evaluation only).

Every reader reports what it skipped and why (`finetune.data.LoadReport`), and validates each gold call against
its tool's schema, so no example teaches an invalid call. Tools are converted to OpenAI form with
`python_type_schema`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from constrained_fc.eval.data import data_dir as resolve_data_dir

from .data import (Example, LoadReport, RecordError, _canonicalise_calls, infer_objective, load_examples,
                   make_call, make_call_id, validate_example)

# Python type names used by Seal-Tools and API-Bank -> JSON Schema.
PYTHON_TYPES = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
                "number": "number", "bool": "boolean", "boolean": "boolean", "list": "array", "dict": "object",
                "object": "object"}
_NESTED_REF = re.compile(r"^API_call_\d+$")
SEALTOOLS_TRAIN_SPLITS = ("dev", "test_in_domain")
SEALTOOLS_HELDOUT_SPLIT = "test_out_domain"


def python_type_schema(type_name: Any, where: str) -> dict:
    """`{"type": ...}` for a Python-style type name (``str``, ``List[str]``, ``Optional[int]``...)."""
    if not isinstance(type_name, str):
        raise RecordError("tool_def", f"{where}: type must be a string, got {type_name!r}")
    t = type_name.strip()
    inner = re.fullmatch(r"(?i)optional\[(.+)\]", t)
    if inner:
        return python_type_schema(inner.group(1), where)
    generic = re.fullmatch(r"(?i)(list|dict|tuple)\s*[\[(](.*)[\])]", t)
    if generic:
        kind = generic.group(1).lower()
        if kind in ("list", "tuple"):
            try:
                return {"type": "array", "items": python_type_schema(generic.group(2), where)}
            except RecordError:
                return {"type": "array"}
        return {"type": "object"}
    if t.lower() in PYTHON_TYPES:
        return {"type": PYTHON_TYPES[t.lower()]}
    raise RecordError("tool_def", f"{where}: unknown parameter type {type_name!r}")


def python_style_tool(name: Any, description: Any, parameters: Any, required: Any = None) -> dict:
    """A Seal-Tools / API-Bank tool -> OpenAI form. `required` None means every parameter is required (API-Bank
    lists no `required`, and its calls give every parameter)."""
    if not isinstance(name, str) or not isinstance(parameters, dict):
        raise RecordError("tool_def", f"tool {name!r}: needs a string name and a parameters mapping")
    props = {}
    for pname, spec in parameters.items():
        where = f"tool {name!r} parameter {pname!r}"
        if not isinstance(spec, dict):
            raise RecordError("tool_def", f"{where}: must be an object")
        schema = python_type_schema(spec.get("type", "str"), where)
        if isinstance(spec.get("description"), str) and spec["description"].strip():
            schema["description"] = spec["description"].strip()
        props[pname] = schema
    req = list(props) if required is None else [r for r in required if r in props]
    params = {"type": "object", "properties": props}
    if req:
        params["required"] = req
    return {"type": "function", "function": {"name": name, "description": (description or "").strip(),
                                             "parameters": params}}


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, RecordError("json", f"bad JSON ({e.msg})")


def coerce_to_schema(schema: Any, value: Any) -> Any:
    """Scalars written as strings where the schema wants a number or boolean (``"63"`` for an integer,
    ``"19.5"`` for a number, ``"true"``), converted; everything else unchanged. Seal-Tools and API-Bank write
    most numbers as strings, and a model trained on those would learn to quote numbers."""
    if not isinstance(schema, dict):
        return value
    kind = schema.get("type")
    if isinstance(value, dict) and kind == "object":
        props = schema.get("properties") or {}
        return {k: coerce_to_schema(props.get(k), v) for k, v in value.items()}
    if isinstance(value, list) and kind == "array":
        return [coerce_to_schema(schema.get("items"), v) for v in value]
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind == "integer" and re.fullmatch(r"[-+]?\d+", text):
                return int(text)
            if kind == "integer" and re.fullmatch(r"[-+]?\d+\.0*", text):
                return int(float(text))
            if kind == "number" and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
                number = float(text)
                return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() \
                    else number
        except (ValueError, OverflowError):
            return value
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
    return value


def _coerce_calls(ex: Example) -> None:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in ex.tools}
    for m in ex.messages:
        for call in m.get("tool_calls") or []:
            fn = call["function"]
            fn["arguments"] = coerce_to_schema(schemas.get(fn["name"]), fn["arguments"])


def _finish(ex: Example, report: LoadReport, where: str) -> Example | None:
    _coerce_calls(ex)
    try:
        validate_example(ex)
        _canonicalise_calls(ex)
    except RecordError as e:
        report.skip(where, e)
        return None
    ex.meta.setdefault("objective", infer_objective(ex.messages))
    report.loaded += 1
    return ex


# ------------------------------------------------------------------------------------------------ Seal-Tools
def sealtools_tools(root: str | Path | None = None) -> dict[str, dict]:
    """{name: OpenAI-form tool} of ``sealtools/tool.jsonl``, with each tool's ``field`` in ``x-field`` left out
    of the schema (kept in the returned mapping's ``meta`` under ``_field``)."""
    path = Path(resolve_data_dir(root)) / "sealtools" / "tool.jsonl"
    tools = {}
    for n, obj in _jsonl(path):
        if isinstance(obj, RecordError) or not isinstance(obj, dict):
            continue
        try:
            tool = python_style_tool(obj.get("api_name"), obj.get("api_description"), obj.get("parameters"),
                                     obj.get("required") or [])
        except RecordError:
            continue
        tool["_field"] = obj.get("field", "")
        tools[tool["function"]["name"]] = tool
    return tools


def public_tool(tool: dict) -> dict:
    """The OpenAI-form tool without our bookkeeping keys."""
    return {k: v for k, v in tool.items() if not k.startswith("_")}


def load_sealtools(split: str, root: str | Path | None = None,
                   tools: dict[str, dict] | None = None) -> tuple[list[Example], LoadReport]:
    """Requests of one Seal-Tools split (``dev``, ``test_in_domain``, ``test_out_domain``), each offered only
    the tools it calls (`finetune.mix` adds distractors)."""
    tools = sealtools_tools(root) if tools is None else tools
    path = Path(resolve_data_dir(root)) / "sealtools" / f"{split}.jsonl"
    report = LoadReport(path=str(path), format="sealtools")
    out = []
    for n, obj in _jsonl(path):
        where = f"{path}: line {n}"
        if isinstance(obj, RecordError):
            report.skip(where, obj)
            continue
        calling = obj.get("calling") if isinstance(obj, dict) else None
        query = obj.get("query") if isinstance(obj, dict) else None
        if not isinstance(calling, list) or not calling or not isinstance(query, str):
            report.skip(where, RecordError("shape", "needs 'query' and a non-empty 'calling' list"))
            continue
        if any(isinstance(v, str) and _NESTED_REF.match(v)
               for c in calling for v in (c.get("parameters") or {}).values()):
            report.skip(where, RecordError("nested", "a call uses an earlier call's result, which the data lacks"))
            continue
        missing = [c.get("api") for c in calling if c.get("api") not in tools]
        if missing:
            report.skip(where, RecordError("unknown_tool", f"calls tools not in tool.jsonl: {missing}"))
            continue
        names = list(dict.fromkeys(c["api"] for c in calling))
        calls = [make_call(make_call_id(k + 1), c["api"], dict(c.get("parameters") or {}))
                 for k, c in enumerate(calling)]
        ex = Example(messages=[{"role": "user", "content": query.strip()},
                               {"role": "assistant", "content": None, "tool_calls": calls}],
                     tools=[public_tool(tools[name]) for name in names],
                     meta={"source": f"sealtools/{split}", "line": n, "id": obj.get("id"),
                           "fields": sorted({tools[name]["_field"] for name in names})})
        ex = _finish(ex, report, where)
        if ex is not None:
            out.append(ex)
    return out, report


# --------------------------------------------------------------------------------------------------- API-Bank
_FENCED = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def _apibank_history(turns: list) -> list[dict]:
    """API-Bank turns -> our messages. ``agent`` turns are assistant text; an ``assistant`` turn holds an
    earlier call list as fenced JSON (it joins the agent turn before it) and the ``tool`` turn after it is
    that call's result."""
    messages: list[dict] = []
    k = 0
    for t in turns:
        role, content = t.get("role"), t.get("content")
        if not isinstance(content, str):
            raise RecordError("shape", f"turn {role!r} has no text content")
        if role in ("user", "agent"):
            messages.append({"role": "user" if role == "user" else "assistant", "content": content})
        elif role == "assistant":
            m = _FENCED.match(content)
            try:
                raw = json.loads(m.group(1) if m else content)
            except json.JSONDecodeError:
                raise RecordError("shape", "an earlier call is not JSON") from None
            calls = []
            for c in raw if isinstance(raw, list) else [raw]:
                k += 1
                calls.append(make_call(make_call_id(k), c["name"], dict(c.get("arguments") or {})))
            if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"] = calls
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        elif role == "tool":
            last = next((m for m in reversed(messages) if m.get("tool_calls")), None)
            if last is None:
                raise RecordError("shape", "a tool result answers no call")
            messages.append({"role": "tool", "tool_call_id": last["tool_calls"][-1]["id"], "content": content})
        else:
            raise RecordError("shape", f"unknown turn role {role!r}")
    return messages


def load_apibank(root: str | Path | None = None) -> tuple[list[Example], LoadReport]:
    """API-Bank level-1 and level-2 dialogues: ``agent`` turns become assistant turns; the last agent turn (the
    one that announces the call, ending in "Generate API Request:") becomes the calling turn, keeping its
    words before the marker as the message text."""
    base = Path(resolve_data_dir(root)) / "apibank"
    report = LoadReport(path=str(base), format="apibank")
    out = []
    for level in ("l1", "l2"):
        path = base / f"apibank_{level}.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        for i, obj in enumerate(data):
            where = f"{path}: item {i}"
            try:
                turns, answers = obj["query"], obj["answers"]
                tools = [python_style_tool(t["name"], t.get("description"), t.get("parameters") or {})
                         for t in obj["tools"]]
                # API-Bank omits optional arguments freely; only the parameters every answer gives are required.
                for t in tools:
                    params = t["function"]["parameters"]
                    given = set().union(*[set(a.get("arguments") or {}) for a in answers
                                          if a.get("name") == t["function"]["name"]] or [set()])
                    req = [p for p in params.get("required", []) if p in given] if given else []
                    params.pop("required", None)
                    if req:
                        params["required"] = req
                messages = _apibank_history(turns)
                lead = ""
                if messages and messages[-1]["role"] == "assistant":
                    lead = messages.pop()["content"].split("Generate API Request:")[0].strip()
                n_earlier = sum(len(m.get("tool_calls") or []) for m in messages)
                calls = [make_call(make_call_id(n_earlier + k + 1), a["name"], dict(a.get("arguments") or {}))
                         for k, a in enumerate(answers)]
                messages.append({"role": "assistant", "content": lead or None, "tool_calls": calls})
            except (KeyError, TypeError, AttributeError) as e:
                report.skip(where, RecordError("shape", f"malformed dialogue ({type(e).__name__}: {e})"))
                continue
            except RecordError as e:
                report.skip(where, e)
                continue
            ex = _finish(Example(messages=messages, tools=tools,
                                 meta={"source": f"apibank/{level}", "index": i}), report, where)
            if ex is not None:
                out.append(ex)
    return out, report


# ------------------------------------------------------------------------------------------------------ Glaive
def load_glaive(root: str | Path | None = None) -> tuple[list[Example], LoadReport]:
    path = Path(resolve_data_dir(root)) / "glaive" / "glaive_toolcall_en_demo.json"
    examples, report = load_examples(path, format="sharegpt")
    for ex in examples:
        ex.meta["source"] = "glaive"
    return examples, report


# -------------------------------------------------------------------------------------------- tool-free prompts
def self_instruct_prompts(root: str | Path | None = None) -> list[str]:
    """Self-instruct seed and user-oriented tasks as single user prompts (instruction, then the first
    instance's input when it has one). Training material for plain-chat retention."""
    base = Path(resolve_data_dir(root)) / "chat"
    prompts = []
    for name in ("self_instruct_seed_tasks.jsonl", "self_instruct_user_oriented.jsonl"):
        for _, obj in _jsonl(base / name):
            if not isinstance(obj, dict) or not isinstance(obj.get("instruction"), str):
                continue
            text = obj["instruction"].strip()
            inst = obj.get("instances") or []
            extra = inst[0].get("input", "") if inst and isinstance(inst[0], dict) else ""
            if isinstance(extra, str) and extra.strip():
                text = f"{text}\n\n{extra.strip()}"
            prompts.append(text)
    return list(dict.fromkeys(prompts))


def mt_bench_prompts(root: str | Path | None = None) -> list[str]:
    """The first turn of each of the 80 MT-Bench questions: evaluation only, never training."""
    path = Path(resolve_data_dir(root)) / "chat" / "mt_bench_questions.jsonl"
    return [obj["turns"][0] for _, obj in _jsonl(path) if isinstance(obj, dict) and obj.get("turns")]


__all__ = ["python_type_schema", "python_style_tool", "sealtools_tools", "load_sealtools", "load_apibank",
           "load_glaive", "self_instruct_prompts", "mt_bench_prompts", "public_tool", "PYTHON_TYPES",
           "SEALTOOLS_TRAIN_SPLITS", "SEALTOOLS_HELDOUT_SPLIT"]
