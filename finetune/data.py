"""Training records for the tool-calling fine-tune: one `Example` type, read from three input formats.

Every loader turns its input into `Example`s whose messages are in OpenAI shape (arguments as dicts, tool
results as `tool` messages linked by `tool_call_id`) and whose tools are in OpenAI form. Formats:

* ``function_call``: ``.jsonl``, one ``{"user": {"content"}, "function_call": {"name", "arguments"},
  "functions": [...]}`` a line (the original training-file format; tools in bare form);
* ``messages``: ``.jsonl``, one ``{"messages": [...], "tools" | "functions": [...]}`` a line, OpenAI or Mistral
  style, legacy ``function_call`` turns and ``function``-role results included (also what `Example.to_json`
  writes, so our own output reads back);
* ``sharegpt``: ShareGPT / Glaive conversations (``from`` in human/gpt/function_call/observation, ``tools`` a
  JSON string), as a ``.json`` array or one conversation per ``.jsonl`` line.

A record that cannot be used is skipped, never fatal: it is reported with its file and line (or array index)
and the reason, and counted in the `LoadReport`. Every gold call is checked against its tool's JSON Schema
(draft 2020-12, formats asserted); a record whose gold call is invalid is skipped, because a model trained on it
would learn to hallucinate arguments. Loaded arguments are put in schema order (`order_arguments`), the order
the constrained grammar writes them in. Only file-level problems (missing file, an unreadable JSON array, a
format that cannot be recognised) raise.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from constrained_fc.errors import ToolSchemaError
from constrained_fc.compiler.tools import NAME_RE
from constrained_fc.compiler.tools import normalize_tool as _library_normalize_tool
from constrained_fc.compiler.tools import normalize_tools as _library_normalize_tools
from constrained_fc.compiler.tools import schema_validator

log = logging.getLogger(__name__)

OBJECTIVES = ("single", "parallel", "nested", "chat", "no_tool")
FORMATS = ("function_call", "messages", "sharegpt")
_FORMAT_ALIASES = {"auto": "auto", "function_call": "function_call", "training": "function_call",
                   "messages": "messages", "openai": "messages", "mistral": "messages",
                   "sharegpt": "sharegpt", "glaive": "sharegpt"}
HOLDOUTS = ("random", "tools", "templates")
_MAX_LOGGED_ERRORS = 20  # per file; the rest are still in LoadReport.errors


class RecordError(ValueError):
    """One record is unusable. `kind` groups reasons for the report's summary."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


# ------------------------------------------------------------------------------------------------- records
@dataclass
class Example:
    """One training conversation: OpenAI-shape `messages`, OpenAI-form `tools`, and `meta` (source, line or
    index, objective, template...)."""

    messages: list[dict]
    tools: list[dict]
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"messages": self.messages, "tools": self.tools, "meta": self.meta}

    def to_json(self) -> str:
        """One line of JSON (no newline), stable for a given example so that output files are reproducible."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | dict) -> "Example":
        """Inverse of `to_json` (also accepts the already-parsed dict). Does no format conversion: use
        `load_examples` for foreign formats."""
        obj = json.loads(data) if isinstance(data, (str, bytes, bytearray)) else data
        if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
            raise ValueError("an Example needs a JSON object with a 'messages' list")
        tools = obj.get("tools", [])
        meta = obj.get("meta", {})
        if not isinstance(tools, list) or not isinstance(meta, dict):
            raise ValueError("an Example's 'tools' must be a list and its 'meta' an object")
        return cls(messages=obj["messages"], tools=tools, meta=meta)

    @property
    def tool_names(self) -> list[str]:
        """Names of the offered tools, in order."""
        return [t.get("function", {}).get("name") for t in self.tools]

    @property
    def calls(self) -> list[dict]:
        """Every gold call, in order, as ``{"name", "arguments"}``."""
        return [c["function"] for m in self.messages if m.get("role") == "assistant"
                for c in m.get("tool_calls") or []]

    @property
    def called_tools(self) -> list[str]:
        """Names of the tools the gold answer calls, each once, in order of first call."""
        return list(dict.fromkeys(c["name"] for c in self.calls))


@dataclass
class LoadReport:
    """What one load did: counts, and one line per skipped record (``file: line N: reason``)."""

    path: str = ""
    format: str = ""
    loaded: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)

    def skip(self, where: str, err: RecordError) -> None:
        self.skipped += 1
        self.reasons[err.kind] += 1
        line = f"{where}: {err.message}"
        self.errors.append(line)
        if self.skipped <= _MAX_LOGGED_ERRORS:
            log.warning("skipped %s", line)
        elif self.skipped == _MAX_LOGGED_ERRORS + 1:
            log.warning("%s: more records skipped; see LoadReport.errors", self.path)

    def summary(self) -> str:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items()))
        return (f"{self.path} ({self.format}): loaded {self.loaded}, skipped {self.skipped}"
                + (f" ({why})" if why else ""))


# ------------------------------------------------------------------------------------------------ helpers
def make_call_id(k: int) -> str:
    """Deterministic id for a call the input left unnamed. Nine alphanumerics, since Mistral-style templates
    reject any other shape."""
    return f"call{k:05d}"


def make_call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def parse_arguments(raw: Any, where: str) -> dict:
    """Arguments given as an object or as a JSON string of one -> dict. Empty/None means a no-argument call."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise RecordError("arguments", f"{where}: arguments are not valid JSON ({e.msg} at char {e.pos})")
    if not isinstance(raw, dict):
        raise RecordError("arguments", f"{where}: arguments must be a JSON object, got {type(raw).__name__}")
    return copy.deepcopy(raw)


def _tool_error(e: ToolSchemaError) -> RecordError:
    return RecordError("tool_def", str(e))


def normalize_tool(raw: Any, index: int = 0) -> dict:
    """A tool in any dialect `constrained_fc.compiler.tools.normalize_tool` accepts (OpenAI form, bare/Mistral form, BFCL
    types), or a JSON string of one -> OpenAI form ``{"type": "function", "function": {name, description,
    parameters}}``, with its name and schema checked by the library (so training data and decoding agree on what
    a valid tool is)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise RecordError("tool_def", f"tool #{index} is not valid JSON ({e.msg})")
    try:
        return _library_normalize_tool(raw, index).to_openai()
    except ToolSchemaError as e:
        raise _tool_error(e) from None


def normalize_tools(raw: Any) -> list[dict]:
    """A list of tools (or a JSON string of one) -> OpenAI form, through `constrained_fc.compiler.tools.normalize_tools`;
    duplicate names are an error since a call must identify exactly one tool."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else []
        except json.JSONDecodeError as e:
            raise RecordError("tool_def", f"tools are not valid JSON ({e.msg} at char {e.pos})")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RecordError("tool_def", f"tools must be a list, got {type(raw).__name__}")
    # Each tool separately first, so a bad one is reported by its position (and a JSON string item is parsed).
    tools = [normalize_tool(t, i) for i, t in enumerate(raw)]
    try:
        return [t.to_openai() for t in _library_normalize_tools(tools)]
    except ToolSchemaError as e:  # duplicate names
        raise _tool_error(e) from None


def call_errors(tool: dict, arguments: Any) -> list[str]:
    """Why `arguments` fail `tool`'s parameters (OpenAI-form tool), as readable strings; [] when valid."""
    if not isinstance(arguments, dict):
        return [f"arguments must be a JSON object, got {type(arguments).__name__}"]
    validator = schema_validator(json.dumps(tool["function"]["parameters"], sort_keys=True))
    errs = sorted(validator.iter_errors(arguments),
                  key=lambda e: list(map(str, e.absolute_path)))
    return [f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errs]


def order_arguments(schema: Any, value: Any) -> Any:
    """`value` with object members in the order of the schema's `properties` (unknown members last, as
    given), recursively. The constrained grammar emits members in schema order, so gold calls in any other
    order would teach the model sequences that decoding then forbids."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        extra = schema.get("additionalProperties")
        out = {k: order_arguments(props[k], value[k]) for k in props if k in value}
        out.update({k: order_arguments(extra, v) for k, v in value.items() if k not in props})
        return out
    if isinstance(value, list):
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        items = schema.get("items")
        return [order_arguments(prefix[i] if i < len(prefix) else items, v) for i, v in enumerate(value)]
    return value


def _canonicalise_calls(ex: Example) -> None:
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in ex.tools}
    for m in ex.messages:
        for call in m.get("tool_calls") or []:
            fn = call["function"]
            fn["arguments"] = order_arguments(tools[fn["name"]], fn["arguments"])


def _text(content: Any, where: str, *, optional: bool = False) -> str | None:
    """Message content -> str; OpenAI content-part lists are joined, None allowed where `optional`."""
    if content is None and optional:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise RecordError("shape", f"{where}: content must be a string, got {type(content).__name__}")


# -------------------------------------------------------------------------------------------- conversions
def convert_openai_messages(raw: Any) -> list[dict]:
    """OpenAI / Mistral message list (legacy `function_call` and `function` role included) -> our shape."""
    if not isinstance(raw, list) or not raw:
        raise RecordError("shape", "'messages' must be a non-empty list")
    out: list[dict] = []
    names: dict[str, str] = {}  # call id -> tool name, for results that name only one of the two
    pending: list[str] = []      # call ids not answered yet, oldest first
    n_new = 0
    for i, m in enumerate(raw):
        where = f"message {i}"
        if not isinstance(m, dict):
            raise RecordError("shape", f"{where} is not an object")
        role = m.get("role")
        if role in ("system", "user"):
            out.append({"role": role, "content": _text(m.get("content"), where)})
        elif role == "assistant":
            text = _text(m.get("content"), where, optional=True)
            raw_calls = list(m.get("tool_calls") or [])
            if isinstance(m.get("function_call"), dict):  # legacy single-call form
                raw_calls.append({"function": m["function_call"]})
            calls = []
            for j, c in enumerate(raw_calls):
                cwhere = f"{where} call {j}"
                if not isinstance(c, dict):
                    raise RecordError("shape", f"{cwhere} is not an object")
                fn = c["function"] if isinstance(c.get("function"), dict) else c
                name = fn.get("name")
                if not isinstance(name, str):
                    raise RecordError("shape", f"{cwhere}: missing function name")
                args = parse_arguments(fn.get("arguments"), f"{cwhere} ({name})")
                cid = c.get("id")
                if cid is None:
                    n_new += 1
                    cid = make_call_id(n_new)
                if not isinstance(cid, str) or cid in names:
                    raise RecordError("shape", f"{cwhere}: call id {cid!r} is not a fresh string")
                names[cid] = name
                pending.append(cid)
                calls.append(make_call(cid, name, args))
            if not calls and not (text or "").strip():
                raise RecordError("shape", f"{where}: assistant turn has neither content nor tool calls")
            msg = {"role": "assistant", "content": text if (text or "").strip() else None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
        elif role in ("tool", "function"):
            content = m.get("content")
            if content is None:
                raise RecordError("shape", f"{where}: {role} result has no content")
            if not isinstance(content, str):
                content = json.dumps(content, ensure_ascii=False)
            cid = m.get("tool_call_id")
            if cid is None:
                # Legacy results carry only the function name: they answer the oldest open call of that name.
                want = m.get("name")
                cid = next((p for p in pending if want is None or names[p] == want), None)
                if cid is None:
                    raise RecordError("shape", f"{where}: {role} result {want!r} follows no open call")
            elif cid not in names:
                raise RecordError("shape", f"{where}: tool_call_id {cid!r} matches no earlier call")
            if cid in pending:
                pending.remove(cid)
            out.append({"role": "tool", "tool_call_id": cid, "name": names[cid], "content": content})
        else:
            raise RecordError("shape", f"{where}: unknown role {role!r}")
    return out


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "function_call": "function_call", "observation": "observation",
                   "tool": "observation", "function": "observation"}


def convert_sharegpt(conversations: Any, system: Any = None) -> list[dict]:
    """ShareGPT / Glaive turns -> our shape. Consecutive `function_call` turns form one assistant turn
    (parallel calls); each `observation` answers the oldest unanswered call."""
    if not isinstance(conversations, list) or not conversations:
        raise RecordError("shape", "'conversations' must be a non-empty list")
    out: list[dict] = []
    if isinstance(system, str) and system.strip():
        out.append({"role": "system", "content": system})
    pending: list[tuple[str, str]] = []
    n_calls = 0
    for i, turn in enumerate(conversations):
        where = f"turn {i}"
        if not isinstance(turn, dict):
            raise RecordError("shape", f"{where} is not an object")
        role = _SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise RecordError("shape", f"{where}: unknown speaker {turn.get('from')!r}")
        value = turn.get("value")
        if not isinstance(value, str):
            raise RecordError("shape", f"{where}: 'value' must be a string")
        if role == "function_call":
            try:
                call = json.loads(value)
            except json.JSONDecodeError as e:
                raise RecordError("arguments", f"{where}: function_call is not valid JSON ({e.msg})")
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise RecordError("shape", f"{where}: function_call must be an object with a 'name'")
            args = parse_arguments(call.get("arguments"), f"{where} ({call['name']})")
            n_calls += 1
            cid = make_call_id(n_calls)
            pending.append((cid, call["name"]))
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls") and \
                    out[-1]["content"] is None:
                out[-1]["tool_calls"].append(make_call(cid, call["name"], args))
            else:
                out.append({"role": "assistant", "content": None,
                            "tool_calls": [make_call(cid, call["name"], args)]})
        elif role == "observation":
            if not pending:
                raise RecordError("shape", f"{where}: observation follows no function_call")
            cid, name = pending.pop(0)
            out.append({"role": "tool", "tool_call_id": cid, "name": name, "content": value})
        else:
            out.append({"role": role, "content": value})
    return out


def parse_function_call_record(obj: Any) -> Example:
    if not isinstance(obj, dict):
        raise RecordError("shape", f"record must be a JSON object, got {type(obj).__name__}")
    user = obj.get("user")
    content = user.get("content") if isinstance(user, dict) else user
    if not isinstance(content, str) or not content.strip():
        raise RecordError("shape", "missing field 'user.content'")
    fc = obj.get("function_call")
    if not isinstance(fc, dict):
        raise RecordError("shape", "missing field 'function_call' (an object with name and arguments)")
    name = fc.get("name")
    if not isinstance(name, str):
        raise RecordError("shape", "missing field 'function_call.name'")
    args = parse_arguments(fc.get("arguments"), f"function_call ({name})")
    raw_tools = obj.get("functions", obj.get("tools"))
    if raw_tools is None:
        raise RecordError("shape", "missing field 'functions'")
    tools = normalize_tools(raw_tools)
    messages = []
    system = obj.get("system")
    system = system.get("content") if isinstance(system, dict) else system
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    messages.append({"role": "assistant", "content": None,
                     "tool_calls": [make_call(make_call_id(1), name, args)]})
    return Example(messages=messages, tools=tools, meta={})


def parse_messages_record(obj: Any) -> Example:
    if not isinstance(obj, dict):
        raise RecordError("shape", f"record must be a JSON object, got {type(obj).__name__}")
    if "messages" not in obj:
        raise RecordError("shape", "missing field 'messages'")
    tools = normalize_tools(obj.get("tools", obj.get("functions", [])))
    meta = obj.get("meta")
    return Example(messages=convert_openai_messages(obj["messages"]), tools=tools,
                   meta=copy.deepcopy(meta) if isinstance(meta, dict) else {})


def parse_sharegpt_record(obj: Any) -> Example:
    if not isinstance(obj, dict):
        raise RecordError("shape", f"record must be a JSON object, got {type(obj).__name__}")
    if "conversations" not in obj:
        raise RecordError("shape", "missing field 'conversations'")
    tools = normalize_tools(obj.get("tools", obj.get("functions", [])))
    return Example(messages=convert_sharegpt(obj["conversations"], obj.get("system")), tools=tools, meta={})


_PARSERS: dict[str, Callable[[Any], Example]] = {
    "function_call": parse_function_call_record,
    "messages": parse_messages_record,
    "sharegpt": parse_sharegpt_record,
}


# ------------------------------------------------------------------------------------------------ checking
def validate_example(ex: Example) -> None:
    """Raise `RecordError` unless `ex` is usable for training: valid tools, a coherent conversation, and every
    gold call naming an offered tool with arguments that pass its schema."""
    tools: dict[str, dict] = {}
    for i, t in enumerate(ex.tools):
        fn = t.get("function") if isinstance(t, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not (isinstance(t, dict) and t.get("type") == "function" and isinstance(name, str)
                and NAME_RE.fullmatch(name) and isinstance(fn.get("parameters"), dict)):
            raise RecordError("tool_def", f"tool #{i} is not an OpenAI-form function with a valid name")
        if name in tools:
            raise RecordError("tool_def", f"duplicate tool name {name!r}")
        tools[name] = t
    roles = [m.get("role") if isinstance(m, dict) else None for m in ex.messages]
    if "user" not in roles:
        raise RecordError("shape", "conversation has no user message")
    if "assistant" not in roles:
        raise RecordError("shape", "conversation has no assistant message to learn from")
    if roles.index("user") > roles.index("assistant"):
        raise RecordError("shape", "the assistant speaks before the first user message")
    call_ids: set[str] = set()
    for i, m in enumerate(ex.messages):
        role = roles[i]
        if role not in ("system", "user", "assistant", "tool"):
            raise RecordError("shape", f"message {i}: unknown role {role!r}")
        if role == "tool":
            if m.get("tool_call_id") not in call_ids or not isinstance(m.get("content"), str):
                raise RecordError("shape", f"message {i}: tool result must answer an earlier call and "
                                           "have string content")
            continue
        if role != "assistant":
            if not isinstance(m.get("content"), str):
                raise RecordError("shape", f"message {i}: content must be a string")
            continue
        for j, call in enumerate(m.get("tool_calls") or []):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(call.get("id"), str):
                raise RecordError("shape", f"message {i} call {j}: malformed tool call")
            call_ids.add(call["id"])
            name = fn.get("name")
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                raise RecordError("unknown_tool", f"message {i} call {j}: invalid tool name {name!r}")
            if name not in tools:
                offered = ", ".join(tools) or "none"
                raise RecordError("unknown_tool", f"message {i} call {j}: calls unknown tool {name!r} "
                                                  f"(offered: {offered})")
            errs = call_errors(tools[name], fn.get("arguments"))
            if errs:
                raise RecordError("schema", f"message {i} call {j} ({name}): arguments fail the schema "
                                            f"{errs[0]}")


def infer_objective(messages: list[dict]) -> str:
    """Objective tag from a conversation's shape: several user turns -> chat; else by its calls."""
    users = sum(m.get("role") == "user" for m in messages)
    call_turns = [len(m["tool_calls"]) for m in messages if m.get("role") == "assistant" and m.get("tool_calls")]
    if users > 1:
        return "chat"
    if not call_turns:
        return "no_tool"
    if len(call_turns) > 1:
        return "nested"
    return "parallel" if call_turns[0] > 1 else "single"


# ------------------------------------------------------------------------------------------------- reading
def _read_records(path: Path) -> Iterator[tuple[str, dict, Any]]:
    """(where, location meta, parsed JSON or RecordError) for each record of a JSON array or JSONL file."""
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()  # editors on Windows add a BOM
    first = head[:1]
    if first == b"[" or (first == b"{" and path.suffix.lower() == ".json"):
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            if first == b"[":
                raise ValueError(f"{path}: not a valid JSON array ({e}); nothing can be loaded") from None
            data = None  # a .json file holding JSON lines: read it as such below
        if isinstance(data, list):
            for i, obj in enumerate(data):
                yield f"{path}: item {i}", {"index": i}, obj
            return
        if isinstance(data, dict):
            yield f"{path}: item 0", {"index": 0}, data
            return
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path}: line {n}"
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield where, {"line": n}, RecordError("json", f"not UTF-8 ({e.reason})")
                continue
            if not text.strip():
                continue
            try:
                yield where, {"line": n}, json.loads(text)
            except json.JSONDecodeError as e:
                yield where, {"line": n}, RecordError("json", f"bad JSON ({e.msg} at column {e.colno})")
            except RecursionError:
                yield where, {"line": n}, RecordError("json", "nests deeper than the JSON reader can follow")


def _record_format(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    if "conversations" in obj:
        return "sharegpt"
    if "messages" in obj:
        return "messages"
    if "function_call" in obj or "user" in obj:
        return "function_call"
    return None


def _sniff(records: Iterable[tuple[str, dict, Any]], path: Path, limit: int = 50) -> str:
    votes: Counter = Counter()
    for _, _, obj in records:
        fmt = _record_format(obj)
        if fmt:
            votes[fmt] += 1
            if sum(votes.values()) >= limit:
                break
    if not votes:
        raise ValueError(f"{path}: cannot tell the format (no record has 'conversations', 'messages' or "
                         f"'function_call'); pass format= one of {', '.join(FORMATS)}")
    return votes.most_common(1)[0][0]


def _canonical_format(fmt: str) -> str:
    try:
        return _FORMAT_ALIASES[fmt]
    except KeyError:
        raise ValueError(f"unknown data format {fmt!r}; expected auto or one of {', '.join(FORMATS)}") from None


def _iter_examples(path: Path, fmt: str, report: LoadReport,
                   records: Iterable[tuple[str, dict, Any]] | None = None) -> Iterator[Example]:
    parse = _PARSERS[fmt]
    for where, loc, obj in (records if records is not None else _read_records(path)):
        try:
            if isinstance(obj, RecordError):
                raise obj
            ex = parse(obj)
            validate_example(ex)
            _canonicalise_calls(ex)
        except RecordError as e:
            report.skip(where, e)
            continue
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
            # A shape no check above anticipated: still one bad record, not a reason to stop the run.
            report.skip(where, RecordError("shape", f"malformed record ({type(e).__name__}: {e})"))
            continue
        ex.meta = {**ex.meta, "source": path.name, **loc, "format": fmt}
        ex.meta.setdefault("objective", infer_objective(ex.messages))
        report.loaded += 1
        yield ex


def iter_messages_jsonl(path: str | Path, report: LoadReport | None = None) -> Iterator[Example]:
    """Stream OpenAI / Mistral ``{"messages", "tools"}`` records; bad records go to `report`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    if report is None:
        report = LoadReport()
    report.path, report.format = str(path), "messages"
    yield from _iter_examples(path, "messages", report)


def load_examples(path: str | Path, format: str = "auto") -> tuple[list[Example], LoadReport]:
    """Load every usable record of `path`. `format` is ``auto`` (sniffed from the records' keys),
    ``function_call``, ``messages`` or ``sharegpt`` (aliases: training, openai, mistral, glaive)."""
    path = Path(path)
    fmt = _canonical_format(format)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    records = None
    if fmt == "auto":
        records = list(_read_records(path))
        fmt = _sniff(records, path)
    report = LoadReport(path=str(path), format=fmt)
    examples = list(_iter_examples(path, fmt, report, records))
    (log.warning if report.skipped else log.info)("%s", report.summary())
    return examples, report


def write_jsonl(examples: Iterable[Example], path: str | Path) -> int:
    """Write one `Example.to_json` a line; returns the count."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for ex in examples:
            f.write(ex.to_json() + "\n")
            n += 1
    return n


# ------------------------------------------------------------------------------------------------ splitting
def _holdout_keys(ex: Example, holdout: str) -> list[str]:
    if holdout == "tools":
        return ex.called_tools
    templates = ex.meta.get("templates")
    if isinstance(templates, list) and templates:
        return [str(t) for t in templates]
    template = ex.meta.get("template")
    return [str(template)] if template is not None else []


def split_examples(examples: list[Example], eval_fraction: float = 0.1, seed: int = 0,
                   holdout: str = "random") -> tuple[list[Example], list[Example]]:
    """Split into (train, eval); no example lands in both and both keep the input order.

    * ``random``: a seeded random `eval_fraction` of the examples;
    * ``tools``: whole tools are held out. Eval gets every example that calls a held-out tool; train gets none
      of them, and held-out tools are also removed from train examples' offered tools (where they were only
      distractors), so the model never sees them during training;
    * ``templates``: whole question templates (``meta["templates"]`` or ``meta["template"]``) are held out the
      same way; examples without a template are never held out.

    For ``tools`` and ``templates`` the eval share is approximate, since whole groups move together.
    """
    if holdout not in HOLDOUTS:
        raise ValueError(f"unknown holdout {holdout!r}; expected one of {', '.join(HOLDOUTS)}")
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    n = len(examples)
    target = 0 if eval_fraction == 0 or n < 2 else max(1, round(n * eval_fraction))
    rng = random.Random(f"split:{seed}:{holdout}")
    if target == 0:
        return list(examples), []
    if holdout == "random":
        chosen = set(rng.sample(range(n), target))
        return ([ex for i, ex in enumerate(examples) if i not in chosen],
                [ex for i, ex in enumerate(examples) if i in chosen])

    keys = [_holdout_keys(ex, holdout) for ex in examples]
    users: dict[str, list[int]] = {}
    for i, ks in enumerate(keys):
        for k in ks:
            users.setdefault(k, []).append(i)
    if len(users) < 2:
        what = "called tools" if holdout == "tools" else "templates (meta['template'])"
        raise ValueError(f"holdout={holdout!r} needs at least two distinct {what}; found {len(users)}")
    order = sorted(users)
    rng.shuffle(order)
    held: list[str] = []
    in_eval: set[int] = set()
    for k in order:
        if len(in_eval) >= target or len(held) == len(users) - 1:
            break
        grown = in_eval.union(users[k])
        # Skip a group that would overshoot badly, unless nothing has been held out yet.
        if held and len(grown) > math.ceil(target * 1.5):
            continue
        held.append(k)
        in_eval = grown
    held_set = set(held)
    log.info("held out %d %s: %s", len(held), holdout, ", ".join(sorted(held)))
    train, evals = [], []
    for i, ex in enumerate(examples):
        if i in in_eval:
            evals.append(ex)
        elif holdout == "tools" and held_set.intersection(ex.tool_names):
            kept = [t for t in ex.tools if t["function"]["name"] not in held_set]
            train.append(Example(messages=ex.messages, tools=kept, meta=dict(ex.meta)))
        else:
            train.append(ex)
    return train, evals
