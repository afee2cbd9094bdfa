"""Stage 1: normalise tool definitions from the OpenAI, Mistral and BFCL dialects into one `Tool` type."""
from __future__ import annotations

import copy
import functools
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import jsonschema
import jsonschema_rs

from ..errors import ToolSchemaError

NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# BFCL's dialect names Python types; its own converter maps them like this. "any" and an empty type mean
# "no type constraint" here (BFCL maps them to string, which would reject valid non-string arguments).
_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array", "int": "integer", "str": "string",
               "bool": "boolean", "list": "array"}
_BFCL_ANY = ("any", "")  # BFCL's "anything goes"; any other unknown name stays and fails the metaschema
# Keywords whose values are themselves schemas (or maps / lists of schemas): the BFCL conversion walks them.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
               "unevaluatedProperties", "unevaluatedItems", "additionalItems")

_META_VALIDATOR = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class Tool:
    """One callable tool: a name, a description and a JSON Schema (draft 2020-12) for its arguments."""

    name: str
    parameters: dict
    description: str = ""
    strict: bool = False

    def to_openai(self) -> dict:
        fn = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": fn}


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:12]


@functools.lru_cache(maxsize=1024)
def schema_validator(schema_json: str, *, formats: bool = True) -> jsonschema.Draft202012Validator:
    """A validator for a (normalised) argument schema given as JSON text, cached: building one is the slow part
    of checking a call, and callers see the same few schemas again and again. `formats`: assert ``format`` (as
    OpenAI's strict mode does, and as the grammar does) rather than treat it as an annotation."""
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER if formats else None
    return jsonschema.Draft202012Validator(json.loads(schema_json), format_checker=checker)


@dataclass
class ToolCall:
    """A parsed call. `error` is set when the arguments fail the tool's JSON Schema; such a call is never
    presented as valid (`valid` is False) and is never executed by `run_agent`."""

    name: str
    arguments: dict
    id: str = field(default_factory=new_call_id)
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


def _bfcl_to_json_schema(schema: Any) -> Any:
    """Rewrite BFCL's Python type names into JSON Schema, recursively; a standard schema passes unchanged."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    t = out.get("type")
    if isinstance(t, str):
        if t in _BFCL_TYPES:
            out["type"] = _BFCL_TYPES[t]
        elif t in _BFCL_ANY:
            del out["type"]
    elif isinstance(t, list):
        if any(x in _BFCL_ANY for x in t):
            del out["type"]
        else:
            out["type"] = list(dict.fromkeys(_BFCL_TYPES.get(x, x) for x in t))
    # BFCL marks optional properties on the property itself; JSON Schema uses the parent's `required`.
    if isinstance(out.get("optional"), bool):
        del out["optional"]
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: _bfcl_to_json_schema(v) for k, v in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_bfcl_to_json_schema(v) for v in out[key]]
    for key in _SCHEMA_ONE:
        if key in out:
            out[key] = _bfcl_to_json_schema(out[key])
    if out.get("type") == "array" and isinstance(out.get("items"), list):  # draft-4 tuple form
        out["prefixItems"] = out.pop("items")
    return out


# Keywords whose values are data, not schemas: a "pattern" key inside them is not a regex.
_DATA_KEYWORDS = ("enum", "const", "default", "examples")


def _check_runnable(schema: Any, tool: str | None, path: tuple) -> None:
    """What the metaschema lets through but would fail later, at run time: numbers that are not finite (no JSON
    text can hold them; the range compiler overflows on them) and regexes Python's `re` cannot compile (the
    `jsonschema` check of every call uses `re`). Raised now, naming the place, instead of mid-generation."""
    if isinstance(schema, float) and not math.isfinite(schema):
        raise ToolSchemaError(f"{schema!r} is not a finite number", tool=tool, path=path,
                              keyword=str(path[-1]) if path else None)
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            _check_runnable(item, tool, path + (i,))
        return
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key in _DATA_KEYWORDS:
            continue
        regexes = [value] if key == "pattern" and isinstance(value, str) else \
            list(value) if key == "patternProperties" and isinstance(value, dict) else []
        for regex in regexes:
            try:
                re.compile(regex)
            except re.error as e:
                raise ToolSchemaError(f"{regex!r} is not a regular expression the validator can run ({e})",
                                      tool=tool, path=path + (key,), keyword=key) from None
        _check_runnable(value, tool, path + (key,))


# Nesting limit of a schema document, counted in JSON containers (one object property level is two: the
# property's schema and its "properties" map). The compiler, the renderer and the `jsonschema` check recurse;
# 64 nested objects compile, parse and validate well inside Python's recursion limit (README, "Guarantees").
MAX_SCHEMA_DEPTH = 128


def _check_depth(schema: Any, tool: str | None, base_path: tuple) -> None:
    """Iteratively (a deep document must not hit the recursion limit while being measured)."""
    stack = [(schema, base_path, 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ToolSchemaError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} JSON levels "
                                  f"({MAX_SCHEMA_DEPTH // 2} nested objects), which is the supported limit",
                                  tool=tool, path=path)
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(value, (dict, list)):
                stack.append((value, path + (key,), depth + 1))


def check_schema(schema: Any, *, tool: str | None = None, base_path: tuple = (), validator=None) -> None:
    """Raise `ToolSchemaError` (tool, JSON path, keyword) unless `schema` is a valid JSON Schema that the
    grammar and the `jsonschema` check can both run. `validator`: the metaschema validator class to use
    (default: the one the schema's `$schema` declares, else draft 2020-12)."""
    if not isinstance(schema, (dict, bool)):
        raise ToolSchemaError(f"a JSON Schema must be an object or a boolean, got {type(schema).__name__}",
                              tool=tool, path=base_path)
    _check_depth(schema, tool, base_path)
    if validator is None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        validator = _META_VALIDATOR if cls is jsonschema.Draft202012Validator else cls(cls.META_SCHEMA)
    err = None if validator is _META_VALIDATOR and _passes_2020_12(schema) else \
        jsonschema.exceptions.best_match(validator.iter_errors(schema))
    if err is not None:
        raise ToolSchemaError(f"not a valid JSON Schema: {err.message}", tool=tool,
                              path=base_path + tuple(err.absolute_path), keyword=err.validator)
    _check_runnable(schema, tool, base_path)


def _passes_2020_12(schema: Any) -> bool:
    """The 2020-12 metaschema check by jsonschema-rs: about 1 µs a tool where jsonschema's `$dynamicRef`
    resolution takes about 1.5 ms, which made a 1,000-tool list slow to compile. Only a pass is trusted; a
    failure goes to jsonschema for the error message. Both agree on every schema of JSON-Schema-Test-Suite
    2020-12; a schema naming any other (or a custom) metaschema, at any depth, is left to jsonschema."""
    try:
        text = json.dumps(schema)
        if '"$schema"' in text and not (isinstance(schema, dict) and schema.get("$schema") == _DRAFT_2020_12
                                        and text.count('"$schema"') == 1):
            return False
        return jsonschema_rs.meta.is_valid(schema)
    except Exception:  # not JSON, or a $ref it cannot resolve: let jsonschema decide (and explain)
        return False


def _check_metaschema(schema: dict, tool: str, base_path: tuple) -> None:
    check_schema(schema, tool=tool, base_path=base_path, validator=_META_VALIDATOR)


def _unwrap(raw: Any, index: int) -> tuple[Mapping, tuple]:
    """Return the function definition inside any accepted wrapper, and the path prefix it sits at."""
    if not isinstance(raw, Mapping):
        raise ToolSchemaError(f"a tool must be a JSON object, got {type(raw).__name__}", tool=f"#{index}")
    if raw.get("type") == "function" and isinstance(raw.get("function"), Mapping):
        return raw["function"], ("function",)
    if "function" in raw and isinstance(raw["function"], Mapping) and "name" not in raw:
        return raw["function"], ("function",)
    return raw, ()


def normalize_tool(raw: Any, index: int = 0) -> Tool:
    """One tool in any accepted form -> `Tool`, or a `ToolSchemaError` naming the tool, path and keyword."""
    fn, prefix = _unwrap(raw, index)
    name = fn.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ToolSchemaError(f"tool name {name!r} must match [A-Za-z0-9_.-]{{1,64}}", tool=f"#{index}",
                              path=prefix + ("name",), keyword="name")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    ppath = prefix + ("parameters",)
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise ToolSchemaError("parameters must be an object schema", tool=name, path=ppath, keyword="type")
    params = _bfcl_to_json_schema(copy.deepcopy(params))
    if "type" not in params and ("properties" in params or not params):
        params["type"] = "object"
    if params.get("type") != "object":
        raise ToolSchemaError(f"parameters must be an object schema, got type {params.get('type')!r}",
                              tool=name, path=ppath, keyword="type")
    _check_metaschema(params, name, ppath)
    description = fn.get("description") or ""
    if not isinstance(description, str):
        raise ToolSchemaError("description must be a string", tool=name, path=prefix + ("description",),
                              keyword="description")
    return Tool(name=name, parameters=params, description=description, strict=bool(fn.get("strict", False)))


def normalize_tools(tools: Iterable[Any] | str) -> list[Tool]:
    """Accept a list of tools (OpenAI, bare/Mistral or BFCL dialect, or `Tool` objects; also a JSON string)
    and return `Tool`s. Duplicate names are an error: a call must name exactly one tool."""
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            raise ToolSchemaError(f"tools are not valid JSON: {e}") from None
    if isinstance(tools, Mapping):
        tools = tools.get("tools", tools.get("functions", [tools]))
    if not isinstance(tools, (list, tuple)):
        raise ToolSchemaError(f"tools must be a list of tool definitions, got {type(tools).__name__}")
    out: list[Tool] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(tools):
        tool = raw if isinstance(raw, Tool) else normalize_tool(raw, i)
        if tool.name in seen:
            raise ToolSchemaError(f"duplicate tool name (also tool #{seen[tool.name]})", tool=tool.name,
                                  path=(i, "name"), keyword="name")
        seen[tool.name] = i
        out.append(tool)
    return out
