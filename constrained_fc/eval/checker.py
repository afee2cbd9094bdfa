"""The one BFCL (v3) AST checker shared by `benchmarks/` and `finetune/`, plus a lenient parser for
unconstrained model output and a hallucination classifier.

`check_calls` follows BFCL's `bfcl_eval/eval_checker/ast_eval/ast_checker.py` (Python language) rule by rule,
including its quirks, so scores stay comparable with the leaderboard. Deliberate differences:

* parallel categories pair calls with ground-truth entries by a full bipartite matching; BFCL pairs them
  greedily, which can reject an output that has a valid pairing;
* values nested inside lists and dicts are compared recursively with the same string normalisation (BFCL
  normalises one level only and compares deeper values with `==`);
* unknown schema types (BFCL would crash) skip the type check; JSON Schema's `number` / `object` are read
  as BFCL's `float` / `dict` so OpenAI-form tools work too;
* a ground-truth function name that is not among the functions, or malformed arguments, fail the call
  with a reason instead of raising.
"""
from __future__ import annotations

import ast
import functools
import json
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..compiler.call_scanner import closing_bracket
from ..compiler.formats import HERMES, MISTRAL
from ..compiler.tools import normalize_tools, schema_validator

__all__ = ["CheckResult", "check_calls", "parse_lenient", "hallucination_kind", "standardize_string"]


@dataclass
class CheckResult:
    """`ok` and, when not ok, `reason`: a machine-friendly tag, a colon, then a human explanation."""

    ok: bool
    reason: str = ""

    @property
    def tag(self) -> str:
        """The reason's tag (e.g. `wrong_value`), empty when ok."""
        return self.reason.split(":", 1)[0] if self.reason else ""

    def __bool__(self) -> bool:
        return self.ok


_OK = CheckResult(True, "")


def _fail(tag: str, text: str) -> CheckResult:
    return CheckResult(False, f"{tag}: {text}")


# ----------------------------------------------------------------------------------------------------------
# Value comparison

# BFCL's PYTHON_TYPE_MAPPING; "any" really is str there. The JSON Schema names are an extension.
_PY_TYPES = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list, "tuple": list,
             "dict": dict, "any": str, "number": float, "object": dict}
_NESTED_CHECKED = ("array", "tuple")
_STRIP_RE = re.compile(r"[ ,./\-_*^]")


def standardize_string(s: str) -> str:
    """BFCL's normalisation: drop spaces and `,./-_*^`, lowercase, and turn `'` into `"`."""
    return _STRIP_RE.sub("", s).lower().replace("'", '"')


def _is_gt_dict(acc: Any) -> bool:
    # Ground truth writes a dict argument as {key: [acceptable values]}; a literal dict may look the same,
    # so callers try both readings.
    return isinstance(acc, dict) and all(isinstance(v, list) for v in acc.values())


def _match(value: Any, acc: Any) -> bool:
    """Does `value` equal one acceptable value `acc`, normalising strings at every depth?"""
    if isinstance(acc, str):
        return isinstance(value, str) and standardize_string(value) == standardize_string(acc)
    if isinstance(value, str):
        return False
    if isinstance(value, dict) and isinstance(acc, dict):
        return (_is_gt_dict(acc) and _dict_matches(value, acc)) or (
            value.keys() == acc.keys() and all(_match(value[k], acc[k]) for k in value))
    if isinstance(value, (list, tuple)) and isinstance(acc, (list, tuple)):
        return len(value) == len(acc) and all(_match(v, a) for v, a in zip(value, acc))
    if isinstance(value, (dict, list, tuple)) or isinstance(acc, (dict, list, tuple)):
        return False
    # Scalars compare with Python ==, as BFCL does (so 2 == 2.0); top-level types are checked beforehand.
    try:
        return bool(value == acc)
    except Exception:
        return False


def _dict_matches(value: Mapping, acc: Mapping) -> bool:
    """BFCL's dict_checker for one ground-truth dict {key: [acceptable values]}."""
    for key, v in value.items():
        if key not in acc or not any(_match(v, a) for a in acc[key]):
            return False
    return all(key in value or "" in opts for key, opts in acc.items())


def _fmt(v: Any, limit: int = 120) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[:limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------------
# Normalising inputs

def _unwrap_function(fn: Any) -> Mapping:
    if isinstance(fn, Mapping) and isinstance(fn.get("function"), Mapping) and "name" not in fn:
        return fn["function"]
    if hasattr(fn, "name") and hasattr(fn, "parameters") and not isinstance(fn, Mapping):  # a `Tool`
        return {"name": fn.name, "parameters": fn.parameters}
    return fn if isinstance(fn, Mapping) else {}


def _decode_arguments(args: Any) -> Any:
    if args is None:
        return {}
    if isinstance(args, str):
        try:
            return json.loads(args) if args.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            return args
    return args


def _as_call(call: Any) -> tuple[Any, Any]:
    """(name, arguments) from a pair, an object with .name/.arguments, or a {"name", "arguments"} dict."""
    if isinstance(call, Mapping):
        inner = call.get("function") if isinstance(call.get("function"), Mapping) else call
        args = inner.get("arguments", inner.get("parameters"))
        return inner.get("name"), _decode_arguments(args)
    if hasattr(call, "name") and hasattr(call, "arguments"):
        return call.name, _decode_arguments(call.arguments)
    if isinstance(call, (tuple, list)) and len(call) == 2:
        return call[0], _decode_arguments(call[1])
    return None, None


# ----------------------------------------------------------------------------------------------------------
# BFCL's simple_function_checker, type_checker and friends

def _first_type(acceptable: list) -> type | None:
    for a in acceptable:
        if a != "":
            return type(a)
    return None


def _type_ok(value: Any, acceptable: list, expected: type, nested: type | None) -> tuple[bool, bool]:
    """BFCL's type_checker: (valid, is_variable). A ground truth whose type differs from the declared one
    stands for a variable name, and a value of the ground truth's type is then accepted."""
    gt_type = _first_type(acceptable)
    is_variable = gt_type is not None and gt_type is not expected
    if type(value) is expected:
        if nested is None:
            return True, is_variable
        for item in acceptable:
            # Only list-shaped acceptable values constrain the items; BFCL checks one level deep.
            if type(item) is not list or all(_type_ok(v, item, nested, None)[0] for v in value):
                return True, is_variable
        return False, False
    if gt_type is not None and type(value) is gt_type:
        return True, True
    return False, False


def _check_param(param: str, value: Any, acceptable: list, schema: Mapping) -> CheckResult:
    type_desc = schema.get("type") if isinstance(schema, Mapping) else None
    expected = _PY_TYPES.get(type_desc) if isinstance(type_desc, str) else None
    nested = None
    if type_desc in _NESTED_CHECKED and isinstance(schema.get("items"), Mapping):
        item_type = schema["items"].get("type")
        nested = _PY_TYPES.get(item_type) if isinstance(item_type, str) else None
    if type_desc == "tuple" and type(value) is tuple:
        value = list(value)
    if type_desc in ("float", "number") and type(value) is int:  # Python's implicit int -> float
        value = float(value)

    is_variable = False
    if expected is not None:
        valid, is_variable = _type_ok(value, acceptable, expected, nested)
        if not valid:
            inner = f" of {schema['items'].get('type')}" if nested is not None else ""
            return _fail("type_error", f"param {param!r}: expected {type_desc}{inner}, got "
                                       f"{type(value).__name__} {_fmt(value)}")

    if is_variable:
        ok = value in acceptable
    elif expected is list and value == [] and "" in acceptable:
        # BFCL's list checkers read "" as an empty list, so [] passes for an omittable list parameter.
        ok = True
    else:
        ok = any(_match(value, a) for a in acceptable)
    if not ok:
        return _fail("wrong_value", f"param {param!r}: got {_fmt(value)}, expected one of {_fmt(acceptable, 200)}")
    return _OK


def _check_one(function: Mapping, name: Any, args: Any, answer: Mapping) -> CheckResult:
    """One call against one ground-truth entry {name: {param: [acceptable]}}, using `function`'s schema."""
    expected_name = function.get("name")
    if name != expected_name:
        return _fail("wrong_func_name", f"expected {expected_name!r}, got {_fmt(name)}")
    if not isinstance(args, Mapping):
        return _fail("bad_arguments", f"{name}: arguments must be an object, got {_fmt(args)}")
    acceptable = next(iter(answer.values())) if answer else {}
    parameters = function.get("parameters")
    parameters = parameters if isinstance(parameters, Mapping) else {}
    properties = parameters.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    for param in parameters.get("required") or []:
        if param not in args:
            return _fail("missing_required", f"{name}: required param {param!r} missing")
    for param, value in args.items():
        if param not in properties or param not in acceptable:
            return _fail("unexpected_param", f"{name}: param {param!r} is not expected")
        res = _check_param(param, value, acceptable[param], properties[param])
        if not res.ok:
            return res
    for param, options in acceptable.items():
        if param not in args and "" not in options:
            return _fail("missing_param", f"{name}: param {param!r} missing and not optional")
    return _OK


def _find_function(functions: list[Mapping], name: str) -> Mapping | None:
    for fn in functions:
        if fn.get("name") == name:
            return fn
    return None


def _bipartite(edges: list[list[int]], n_right: int) -> list[int] | None:
    """A perfect matching of left nodes (ground truth) to right nodes (calls), or None (Kuhn's algorithm)."""
    owner = [-1] * n_right

    def augment(i: int, seen: set) -> bool:
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if owner[j] == -1 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(edges)):
        if not augment(i, set()):
            return None
    return owner


def check_calls(calls: Iterable[Any] | None, functions: list, ground_truth: list, category: str) -> CheckResult:
    """Score a model's calls on one BFCL question with BFCL's AST rules.

    `calls`: (name, arguments) pairs, objects with `.name` / `.arguments`, or {"name", "arguments"} dicts
    (arguments may be a JSON string); None means no call. `functions`: the question's BFCL (or OpenAI-form)
    function list. `ground_truth`: [{name: {param: [acceptable values]}}]. `category`: a BFCL category name
    (`simple`, `multiple`, `parallel`, `parallel_multiple`, `irrelevance`, or a `live_` variant).
    """
    pairs = [_as_call(c) for c in (calls or [])]
    fns = [_unwrap_function(f) for f in (functions or [])]
    gts = list(ground_truth or [])

    if "irrelevance" in category:
        if pairs:
            return _fail("irrelevance_call", f"expected no call, got {len(pairs)}: "
                                             f"{', '.join(str(n) for n, _ in pairs)}")
        return _OK
    if "relevance" in category:  # live_relevance: any call counts
        return _OK if pairs else _fail("no_call", "expected at least one call, got none")
    if not any(k in category for k in ("simple", "multiple", "parallel")):
        raise ValueError(f"unknown BFCL category {category!r}; expected simple, multiple, parallel, "
                         f"parallel_multiple or irrelevance (optionally live_)")
    if len(pairs) != len(gts):
        return _fail("wrong_count", f"expected {len(gts)} call(s), got {len(pairs)}")
    if not gts:
        return _OK
    if any(not isinstance(g, Mapping) or len(g) != 1 for g in gts):
        return _fail("bad_ground_truth", f"each entry must be {{name: {{param: [values]}}}}: {_fmt(gts)}")

    if "parallel" not in category:
        if "multiple" in category:
            fn = _find_function(fns, next(iter(gts[0])))
        else:
            # BFCL's simple checker takes the question's only function, not the ground truth's name.
            fn = fns[0] if fns else None
        if fn is None:
            return _fail("bad_ground_truth", f"function {next(iter(gts[0]))!r} is not among the functions")
        return _check_one(fn, *pairs[0], gts[0])

    results: list[list[CheckResult]] = []
    for gt in gts:
        fn = _find_function(fns, next(iter(gt)))
        if fn is None:
            return _fail("bad_ground_truth", f"function {next(iter(gt))!r} is not among the functions")
        results.append([_check_one(fn, name, args, gt) for name, args in pairs])
    edges = [[j for j, r in enumerate(row) if r.ok] for row in results]
    if _bipartite(edges, len(pairs)) is not None:
        return _OK
    # Explain the first ground-truth entry left without a partner, through its closest candidate.
    for i, row in enumerate(results):
        if not edges[i]:
            name = next(iter(gts[i]))
            same = [r for r in row if r.tag != "wrong_func_name"]
            why = (same or row)[0].reason
            return _fail("no_match", f"no call matches expected call #{i} {name!r} ({why})")
    return _fail("no_match", "calls match the expected calls only if one call is used twice")


# ----------------------------------------------------------------------------------------------------------
# Lenient parsing of unconstrained output

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# Our formats' markers come from the format registry; the rest are other models' habits this parser also reads.
_TOOL_CALL_TAG = re.compile(re.escape(HERMES.trigger) + r"(.*?)(?:" + re.escape(HERMES.call_close.strip()) + r"|\Z)",
                            re.S)
_FUNCTION_TAG = re.compile(r"<function=([A-Za-z_][A-Za-z0-9_.\-]*)>(.*?)(?:</function>|\Z)", re.S)
_FENCE = re.compile(r"```[A-Za-z0-9_+\-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_MISTRAL_ARGS = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(?:\[CALL_ID\]\s*[A-Za-z0-9_\-]*\s*)?\[ARGS\]")
_PY_CALL_START = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\s*\(")
_PY_NAMED_CONSTANTS = {"true": True, "false": False, "null": None, "none": None}
_MAX_TEXT = 50_000  # longer text is not scanned (the embedded-JSON scan is quadratic on bracket runs);
# a model reply is a few thousand characters

Call = tuple[str, dict]


def _jsonify(v: Any) -> Any:
    """Python literal -> JSON-shaped value (tuples and sets become lists, odd scalars strings)."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonify(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return [_jsonify(x) for x in v]
    if isinstance(v, dict):
        return {k if isinstance(k, str) else str(k): _jsonify(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _call_from_dict(d: Mapping, explicit: bool) -> Call | None:
    name = d.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        return None
    if "arguments" in d:
        args = d["arguments"]
    elif "parameters" in d:
        args = d["parameters"]
    elif explicit:  # inside a tool-call marker a bare {"name": ...} is a call without arguments
        args = None
    else:
        return None
    args = _decode_arguments(args)
    if not isinstance(args, dict):
        return None
    return name, args


def _calls_from_json(obj: Any, explicit: bool) -> list[Call]:
    if isinstance(obj, list):
        out = []
        for item in obj:
            out.extend(_calls_from_json(item, explicit) if isinstance(item, dict) else [])
        return out
    if not isinstance(obj, dict):
        return []
    if isinstance(obj.get("tool_calls"), list):  # an OpenAI assistant message
        return _calls_from_json(obj["tool_calls"], True)
    if isinstance(obj.get("function"), dict) and "name" not in obj:  # OpenAI tool-call form
        call = _call_from_dict(obj["function"], True)
    else:
        call = _call_from_dict(obj, explicit)
    return [call] if call else []


def _ast_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _ast_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _ast_value(node: ast.AST) -> Any:
    try:
        return _jsonify(ast.literal_eval(node))
    except Exception:
        pass
    if isinstance(node, ast.Name) and node.id.lower() in _PY_NAMED_CONSTANTS:
        return _PY_NAMED_CONSTANTS[node.id.lower()]
    # Never evaluated: a variable or expression stays as its source text, which is how BFCL's ground truth
    # writes variables (e.g. "data['sales']").
    return ast.unparse(node)


def _call_from_ast(node: ast.AST, need_keywords: bool) -> Call | None:
    if not isinstance(node, ast.Call):
        return None
    name = _ast_name(node.func)
    if name is None:
        return None
    if need_keywords and (node.args or not node.keywords):
        return None
    args: dict = {}
    # Positional arguments cannot be named without the schema; BFCL's decoder drops them too.
    try:
        for kw in node.keywords:
            if kw.arg is not None:
                args[kw.arg] = _ast_value(kw.value)
            else:
                spread = _ast_value(kw.value)
                if isinstance(spread, dict):
                    args.update(spread)
    except Exception:  # e.g. RecursionError unparsing a deeply nested value: not a usable call
        return None
    return name, args


def _calls_from_python(text: str) -> list[Call]:
    """Whole-text Python: `f(a=1)`, `[f(a=1), g(b=2)]`, or one call per line."""
    try:
        tree = ast.parse(text.strip(), mode="exec")
    except Exception:
        return []
    out: list[Call] = []
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            return []
        node = stmt.value
        elts = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
        calls = [_call_from_ast(e, False) for e in elts]
        if not calls or any(c is None for c in calls):
            return []
        out.extend(calls)
    return out


def _paren_pairs(text: str) -> dict[int, int]:
    """Matching parentheses by a single bracket-stack pass that ignores quotes (one O(n) pass instead of a
    scan per candidate, which degenerate output like "f(f(f(f(..." would make quadratic)."""
    pairs, stack = {}, []
    for i, ch in enumerate(text):
        if ch == "(":
            stack.append(i)
        elif ch == ")" and stack:
            pairs[stack.pop()] = i
    return pairs


def _parse_call_at(text: str, start: int, end: int) -> tuple[ast.AST | None, bool]:
    """(call node or None, whether the slice was valid Python)."""
    try:
        return ast.parse(text[start:end + 1], mode="eval").body, True
    except Exception:
        return None, False


def _embedded_python(text: str) -> list[Call]:
    # In prose only keyword-argument calls count: "sqrt(2)" in a sentence is not a tool call.
    out: list[Call] = []
    pairs = _paren_pairs(text)
    pos = 0
    while True:
        m = _PY_CALL_START.search(text, pos)
        if not m:
            return out
        open_at = m.end() - 1
        end = pairs.get(open_at)
        call = None
        if end is not None:
            node, parsed = _parse_call_at(text, m.start(), end)
            if not parsed:  # perhaps a parenthesis inside a string literal
                end = closing_bracket(text, open_at, quotes="'\"")  # for `f(a=")")`
                node = _parse_call_at(text, m.start(), end)[0] if end is not None else None
            call = _call_from_ast(node, True) if node is not None else None
        if call:
            out.append(call)
            pos = end + 1
        else:
            pos = m.start() + 1


def _embedded_json(text: str, explicit: bool) -> list[Call]:
    decoder = json.JSONDecoder()
    out: list[Call] = []
    i = 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return out
        i = min(starts)
        try:
            obj, end = decoder.raw_decode(text, i)
        except Exception:
            i += 1
            continue
        calls = _calls_from_json(obj, explicit)
        if calls:
            out.extend(calls)
            i = end
        else:
            i += 1


def _scan(text: str, explicit: bool) -> list[Call]:
    """All calls in one fragment: whole JSON, a Python dict literal, whole Python, then embedded forms."""
    stripped = text.strip()
    if not stripped:
        return []
    try:
        calls = _calls_from_json(json.loads(stripped), explicit)
        if calls:
            return calls
    except Exception:
        pass
    if stripped[0] in "[{":
        try:  # single-quoted, Python-literal JSON
            calls = _calls_from_json(_jsonify(ast.literal_eval(stripped)), explicit)
            if calls:
                return calls
        except Exception:
            pass
    calls = _calls_from_python(stripped)
    if calls:
        return calls
    return _embedded_json(stripped, explicit) or _embedded_python(stripped)


def _mistral(segment: str) -> list[Call]:
    """`name[ARGS]{...}` (newer Mistral templates) repeated, or the older `[{...}]` after the marker."""
    out: list[Call] = []
    pos = 0
    decoder = json.JSONDecoder()
    while True:
        m = _MISTRAL_ARGS.match(segment, pos)
        if not m:
            break
        start = m.end()
        while start < len(segment) and segment[start].isspace():
            start += 1
        try:
            args, end = decoder.raw_decode(segment, start)
        except Exception:
            break
        if isinstance(args, dict):
            out.append((m.group(1), args))
        pos = end
    return out or _scan(segment, True)


def _parse(text: str) -> list[Call]:
    blocks = _TOOL_CALL_TAG.findall(text)
    if blocks:
        calls = [c for b in blocks for c in _scan(b, True)]
        if calls:
            return calls
    tags = _FUNCTION_TAG.findall(text)
    if tags:
        calls = []
        for name, body in tags:
            args = _decode_arguments(body.strip())
            if isinstance(args, dict):
                calls.append((name, args))
        if calls:
            return calls
    if MISTRAL.trigger in text:
        calls = [c for seg in text.split(MISTRAL.trigger)[1:] for c in _mistral(seg)]
        if calls:
            return calls
    fences = _FENCE.findall(text) if "```" in text else []
    if fences:
        calls = [c for f in fences for c in _scan(f, False)]
        if calls:
            return calls
    return _scan(text, False)


def parse_lenient(text: str) -> list[tuple[str, dict]] | None:
    """Tool calls in a model's unconstrained reply, read as leniently as a person would, or None if there
    are none (never []).

    Recognised: JSON `{"name", "arguments" | "parameters"}` objects or arrays of them (arguments may be a
    JSON string), OpenAI `{"function": {...}}` / `{"tool_calls": [...]}` wrappers, after `[TOOL_CALLS]`
    (also `name[ARGS]{...}`), inside `<tool_call>...</tool_call>`, `<function=name>{...}</function>` or
    code fences, or embedded in prose; and Python call syntax `f(a=1)` / `[f(a=1), g(b="x")]`, read with
    `ast` without evaluating anything. Text longer than 50,000 characters is not scanned. Never raises.
    """
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        return None
    try:
        with warnings.catch_warnings():  # ast warns about odd escapes in the model's string literals
            warnings.simplefilter("ignore")
            calls = _parse(text)
    except Exception:  # a parser must not take down an evaluation run; unparseable means "no call"
        return None
    return calls or None


# ----------------------------------------------------------------------------------------------------------
# Hallucinations

@functools.lru_cache(maxsize=256)
def _tools_from_json(key: str) -> tuple:
    return tuple(normalize_tools(json.loads(key)))


def _normalized(tools: Any) -> list:
    try:
        key = json.dumps(tools, sort_keys=True)
    except (TypeError, ValueError):  # `Tool` objects: not JSON, not cached
        return normalize_tools(tools)
    return list(_tools_from_json(key))


def hallucination_kind(call: Any, tools: Any) -> str | None:
    """"unknown_function" if the call names no tool; "schema_violation" if its arguments fail the tool's
    JSON Schema (Draft 2020-12, after BFCL -> JSON Schema conversion) or include a parameter the schema does
    not declare at the top level (an invented parameter is a hallucination even without
    `additionalProperties: false`); otherwise None. Bad tool definitions raise `ToolSchemaError`."""
    name, args = _as_call(call)
    tool = next((t for t in _normalized(tools) if t.name == name), None)
    if tool is None:
        return "unknown_function"
    if not isinstance(args, dict):
        return "schema_violation"
    schema = tool.parameters
    props = schema.get("properties")
    if isinstance(props, dict) and any(k not in props for k in args):
        return "schema_violation"
    try:
        # `format` is not asserted here (it never was), so hallucination counts stay comparable with past runs.
        valid = schema_validator(json.dumps(schema, sort_keys=True), formats=False).is_valid(args)
    except (TypeError, ValueError):  # arguments that are not JSON data cannot satisfy a JSON Schema
        return "schema_violation"
    return None if valid else "schema_violation"
