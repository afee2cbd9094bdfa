"""Synthetic tool-calling conversations generated from a catalogue of tools (``catalogue.json``).

Each catalogue tool is an OpenAI-form tool plus an ``x-synth`` block that only this module reads:

* ``templates``: user requests with ``{slots}`` naming parameter paths (``{location}``, ``{guests.adults}``);
  a template's slots are exactly the arguments of the call it produces, so optional parameters appear only in
  the templates that mention them and every required one must appear in every template;
* ``values``: how to draw each slot, with the surface forms a user would say (``"EUR"`` may be said "euros"):
  ``{"pool": name-or-list}`` (entries may be ``{"value", "say"}``; a pool is filtered by the parameter's enum),
  ``{"const"}``, or ``{"gen": ...}`` with ``int`` / ``number`` (ranges intersected with the schema's, ``step``,
  ``round_to``, ``fmt``), ``date`` (``after`` another date), ``time``, ``code`` (prefix + random characters),
  ``sample`` (distinct pool entries), ``enum`` / ``enum_sample``, ``bool``, ``objects`` (arrays of objects).
  Parameters without an entry are drawn from their schema (enums, ranges, ``format: date``);
* ``combos`` (argument sets that must go together), ``distinct`` (parameters that must differ),
  ``parallel_templates`` (``{location#1}``, ``{location#2}``: one request, several calls), ``follow_ups``
  (short requests that change some arguments of the previous call), ``result`` (a fabricated JSON result: the
  specs above plus ``{"arg"}``, ``{"extra"}`` (from the combo), ``{"format"}``, ``{"calc"}`` (arithmetic on
  arguments and earlier fields), ``list``, ``nearest`` and ``email_from`` generators) and ``answers`` (the
  assistant's reply once the result is in; ``{a.*}`` arguments, ``{r.*}`` result).

The catalogue also holds shared ``pools``, ``chains`` (nested calls: a second call that uses a value from the
first call's result), ``talk`` (canned question/answer pairs no tool fits), ``phrasing`` (prefixes, suffixes,
joiners) and ``system_prompts``. ``x-synth`` never reaches an `Example`'s tools.

`synthesize` is deterministic: the same catalogue, `n`, seed and mix give byte-identical output, whatever the
interpreter's hash seed. Every generated call is checked against its schema as it is made; a failure is a bug
in the catalogue and raises `CatalogueError`.
"""
from __future__ import annotations

import ast
import copy
import datetime as dt
import json
import logging
import math
import operator
import random
import re
import string
import unicodedata
from pathlib import Path
from typing import Any

from .data import OBJECTIVES, Example, RecordError, call_errors, make_call, normalize_tool, order_arguments

log = logging.getLogger(__name__)

DEFAULT_CATALOGUE = Path(__file__).with_name("catalogue.json")
SYNTH_KEY = "x-synth"
DEFAULT_MIX = {"single": 0.35, "parallel": 0.2, "nested": 0.15, "chat": 0.2, "no_tool": 0.1}
TALK_KINDS = ("smalltalk", "knowledge", "unsupported")  # "thanks" only closes a chat

_SLOT_RE = re.compile(r"\{([^{}]+)\}")
_SPEC_KEYS = ("const", "pool", "gen", "arg", "extra", "format", "calc")
_ALNUM = string.ascii_letters + string.digits
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_MAX_TRIES = 200


class CatalogueError(ValueError):
    """The catalogue is malformed, or generated something its own schemas reject."""


# ----------------------------------------------------------------------------------------------- utilities
def _slots(template: str) -> list[str]:
    return list(dict.fromkeys(_SLOT_RE.findall(template)))


def _schema_at(params: dict, path: str) -> dict | None:
    node = params
    for part in path.split("."):
        props = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(props, dict) or part not in props:
            return None
        node = props[part]
    return node


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, list):
            obj = len(obj) if part == "length" else obj[int(part)]
        elif isinstance(obj, dict):
            obj = obj[part]
        else:
            raise KeyError(path)
    return obj


def _set_path(obj: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def _has_path(obj: Any, path: str) -> bool:
    try:
        _get_path(obj, path)
        return True
    except (KeyError, IndexError, ValueError, TypeError):
        return False


def _tidy_number(v: float, decimals: int | None = None) -> int | float:
    """Round, and write whole numbers as integers so that the text and the JSON argument agree ("100")."""
    if decimals is not None:
        v = round(v, decimals)
    if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53:
        return int(v)
    return v


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _say(v: Any) -> str:
    """Default surface form of a value."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return str(_tidy_number(v))
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return _join([_say(x) for x in v]) if v else "none"
    return json.dumps(v, ensure_ascii=False)


def _fill(template: str, ctx: dict) -> str:
    """Replace ``{a.x}`` / ``{r.y}`` / ``{x.z}`` paths with their values' default surface forms."""
    return _SLOT_RE.sub(lambda m: _say(_get_path(ctx, m.group(1))), template)


def _lower_first(text: str) -> str:
    if not text or re.match(r"I\b|I'", text):  # "I" stays a capital
        return text
    return text[0].lower() + text[1:]


def _slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]+", ".", ascii_name.lower()).strip(".")


def _conflict(a: Any, b: Any) -> bool:
    la = a if isinstance(a, list) else [a]
    lb = b if isinstance(b, list) else [b]
    return any(x in lb for x in la)


# ------------------------------------------------------------------------------- arithmetic for fake results
def _loan_payment(principal: float, annual_rate: float, months: int) -> float:
    r = annual_rate / 1200
    return principal / months if r == 0 else principal * r / (1 - (1 + r) ** -months)


def _quadratic_roots(a: float, b: float, c: float) -> list:
    d = b * b - 4 * a * c
    if d < 0:
        return []
    roots = sorted({round((-b - math.sqrt(d)) / (2 * a), 4), round((-b + math.sqrt(d)) / (2 * a), 4)})
    return [_tidy_number(r + 0.0) for r in roots]  # + 0.0 turns -0.0 into 0.0


def _invoice_total(items: list[dict]) -> float:
    return sum(i["quantity"] * i["unit_price"] for i in items)


_CALC_FUNCS = {"factorial": math.factorial, "gcd": math.gcd, "sqrt": math.sqrt, "abs": abs, "min": min,
               "max": max, "round": round, "loan_payment": _loan_payment, "quadratic_roots": _quadratic_roots,
               "invoice_total": _invoice_total}
_CALC_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _calc(expr: str, ctx: dict) -> Any:
    """Evaluate a result's arithmetic (``a.amount * r.rate``) without `eval`: numbers, + - * / ** // %,
    dotted paths into the context and a few whitelisted functions."""
    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _CALC_OPS:
            return _CALC_OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Name):
            return ctx[node.id]
        if isinstance(node, ast.Attribute):
            return _get_path(ev(node.value), node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALC_FUNCS \
                and not node.keywords:
            return _CALC_FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise CatalogueError(f"calc {expr!r}: unsupported expression {ast.dump(node)[:60]}")
    return ev(ast.parse(expr, mode="eval"))


# ---------------------------------------------------------------------------------------------- catalogue
def _infer_spec(schema: dict | None) -> dict | None:
    """A generator for a parameter the catalogue gives no value spec for, read from its schema."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema:
        return {"gen": "enum"}
    t = schema.get("type")
    if t == "integer":
        return {"gen": "int"}
    if t == "number":
        return {"gen": "number"}
    if t == "boolean":
        return {"gen": "bool"}
    if t == "string" and schema.get("format") == "date":
        return {"gen": "date"}
    return None


def _missing_required(params: dict, present: set[str], prefix: str = "") -> list[str]:
    missing = []
    for name in params.get("required", []):
        path = prefix + name
        if path in present:
            continue
        sub = params.get("properties", {}).get(name, {})
        if sub.get("type") == "object" and any(p.startswith(path + ".") for p in present):
            missing += _missing_required(sub, present, path + ".")
        else:
            missing.append(path)
    return missing


class _Tool:
    def __init__(self, openai: dict, synth: dict):
        self.openai = openai
        self.name = openai["function"]["name"]
        self.params = openai["function"]["parameters"]
        self.synth = synth
        self.templates: list[str] = synth.get("templates", [])
        self.combos: list[dict] = [c if "args" in c else {"args": c} for c in synth.get("combos", [])]
        self.combo_keys = sorted({k for c in self.combos for k in c["args"]})

    def spec(self, path: str) -> Any:
        spec = self.synth.get("values", {}).get(path)
        return spec if spec is not None else _infer_spec(_schema_at(self.params, path))


class Catalogue:
    """A parsed, checked catalogue. Build with `load_catalogue` or from an already-loaded dict."""

    def __init__(self, data: Any, source: str = "<catalogue>"):
        self.source = source
        if not isinstance(data, dict) or not isinstance(data.get("tools"), list) or not data["tools"]:
            raise CatalogueError(f"{source}: a catalogue is an object with a non-empty 'tools' list")
        self.pools: dict[str, list] = data.get("pools", {})
        self.tools: dict[str, _Tool] = {}
        for i, raw in enumerate(data["tools"]):
            if not isinstance(raw, dict):
                raise CatalogueError(f"{source}: tool #{i} is not an object")
            fn = raw.get("function") if isinstance(raw.get("function"), dict) else raw
            synth = raw.get(SYNTH_KEY, fn.get(SYNTH_KEY))
            if not isinstance(synth, dict):
                raise CatalogueError(f"{source}: tool #{i} ({fn.get('name')!r}) has no {SYNTH_KEY!r} block")
            try:
                openai = normalize_tool(raw, i)  # keeps name/description/parameters only: x-synth is dropped
            except RecordError as e:
                raise CatalogueError(f"{source}: {e.message}") from None
            name = openai["function"]["name"]
            if name in self.tools:
                raise CatalogueError(f"{source}: duplicate tool name {name!r}")
            self.tools[name] = _Tool(openai, synth)
        self.names = list(self.tools)
        # Tools whose every request names some argument: only these can be called twice with different values.
        self.variable_names = [n for n, t in self.tools.items() if all(_slots(x) for x in t.templates)]
        self.chains: list[dict] = data.get("chains", [])
        self.talk: dict[str, list] = data.get("talk", {})
        self.phrasing: dict = data.get("phrasing", {})
        self.system_prompts: list[str] = data.get("system_prompts", [])
        self._check()

    def __len__(self) -> int:
        return len(self.tools)

    def openai_tool(self, name: str) -> dict:
        return copy.deepcopy(self.tools[name].openai)

    def supports(self, objective: str) -> bool:
        if objective == "nested":
            return bool(self.chains)
        if objective == "no_tool":
            return any(self.talk.get(k) for k in TALK_KINDS)
        return True

    # Static checks give a precise message; a dry run of every template then catches bad value specs.
    def _check(self) -> None:
        src = self.source
        for t in self.tools.values():
            where = f"{src}: tool {t.name!r}"
            if not t.templates or not all(isinstance(x, str) for x in t.templates):
                raise CatalogueError(f"{where}: {SYNTH_KEY}.templates must be a non-empty list of strings")
            for path in list(t.synth.get("values", {})) + t.combo_keys:
                if _schema_at(t.params, path) is None:
                    raise CatalogueError(f"{where}: value for {path!r}, which is not a parameter")
            for kind, templates in (("template", t.templates), ("follow-up", t.synth.get("follow_ups", []))):
                for tpl in templates:
                    for s in _slots(tpl):
                        if _schema_at(t.params, s) is None:
                            raise CatalogueError(f"{where}: {kind} {tpl!r} has slot {{{s}}}, not a parameter")
                        if t.spec(s) is None and s not in t.combo_keys:
                            raise CatalogueError(f"{where}: no value generator for slot {{{s}}}; add one "
                                                 f"under {SYNTH_KEY}.values")
                    if kind == "template":
                        missing = _missing_required(t.params, set(_slots(tpl)) | set(t.combo_keys))
                        if missing:
                            raise CatalogueError(f"{where}: template {tpl!r} lacks required {missing}")
            if t.synth.get("follow_ups") and t.combos:
                raise CatalogueError(f"{where}: follow_ups cannot be combined with combos")
            for tpl in t.synth.get("parallel_templates", []):
                groups = self._parallel_groups(tpl)
                if len(groups) < 2:
                    raise CatalogueError(f"{where}: parallel template {tpl!r} needs slots for 2+ calls (#1, #2)")
                for k, slots in groups.items():
                    missing = _missing_required(t.params, set(slots) | set(t.combo_keys))
                    if missing or any(_schema_at(t.params, s) is None for s in slots):
                        raise CatalogueError(f"{where}: parallel template {tpl!r}, call #{k}: bad or missing "
                                             f"slots {missing or slots}")
        for c in self.chains:
            cid = c.get("id")
            where = f"{src}: chain {cid!r}"
            if c.get("first") not in self.tools or c.get("second") not in self.tools:
                raise CatalogueError(f"{where}: 'first' and 'second' must name catalogue tools")
            first, second = self.tools[c["first"]], self.tools[c["second"]]
            link = c.get("link")
            if not isinstance(link, dict) or not link or not c.get("templates"):
                raise CatalogueError(f"{where}: needs a non-empty 'link' map and 'templates'")
            for path in link:
                if _schema_at(second.params, path) is None:
                    raise CatalogueError(f"{where}: link target {path!r} is not a parameter of {second.name!r}")
            for tpl in c["templates"]:
                s1, s2 = self._chain_slots(tpl, where)
                for tool, slots, extra in ((first, s1, set()), (second, s2, set(link))):
                    bad = [s for s in slots if _schema_at(tool.params, s) is None]
                    missing = _missing_required(tool.params, set(slots) | extra | set(tool.combo_keys))
                    if bad or missing:
                        raise CatalogueError(f"{where}: template {tpl!r}: {tool.name} slots {bad} unknown, "
                                             f"required {missing} missing")
        for kind, pairs in self.talk.items():
            for pair in pairs:
                if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)) \
                        or "{" in pair[0]:
                    raise CatalogueError(f"{src}: talk[{kind!r}] entries must be [question, answer] strings "
                                         f"without braces; got {pair!r}")
        self._dry_run()

    @staticmethod
    def _parallel_groups(tpl: str) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for s in _slots(tpl):
            path, _, k = s.partition("#")
            if not k.isdigit():
                raise CatalogueError(f"parallel template {tpl!r}: slot {{{s}}} needs a call number (#1, #2...)")
            groups.setdefault(int(k), []).append(path)
        return dict(sorted(groups.items()))

    @staticmethod
    def _chain_slots(tpl: str, where: str) -> tuple[list[str], list[str]]:
        s1, s2 = [], []
        for s in _slots(tpl):
            ns, _, path = s.partition(".")
            if ns not in ("first", "second") or not path:
                raise CatalogueError(f"{where}: template {tpl!r}: slot {{{s}}} must start with first. or second.")
            (s1 if ns == "first" else s2).append(path)
        return s1, s2

    def _dry_run(self) -> None:
        gen = _Gen(self, random.Random("catalogue-check"))
        for t in self.tools.values():
            for k, tpl in enumerate(t.templates):
                try:
                    args, _, extras = gen.args(t.name, _slots(tpl))
                    gen.answer(t.name, args, gen.result(t.name, args, extras), extras)
                except CatalogueError:
                    raise
                except (KeyError, IndexError, ValueError, TypeError, AttributeError, ZeroDivisionError) as e:
                    raise CatalogueError(f"{self.source}: tool {t.name!r} template {k} ({tpl!r}): cannot "
                                         f"generate ({type(e).__name__}: {e})") from None
        for c in self.chains:
            for k in range(len(c["templates"])):
                try:
                    gen.nested(c, k)
                except CatalogueError:
                    raise
                except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
                    raise CatalogueError(f"{self.source}: chain {c.get('id')!r} template {k}: cannot generate "
                                         f"({type(e).__name__}: {e})") from None


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Read and check a catalogue file; the packaged ``catalogue.json`` when `path` is None."""
    path = Path(path) if path is not None else DEFAULT_CATALOGUE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogueError(f"no such catalogue file: {path}") from None
    except json.JSONDecodeError as e:
        raise CatalogueError(f"{path}: not valid JSON ({e})") from None
    return Catalogue(data, source=path.name)


# ---------------------------------------------------------------------------------------------- generation
class _Gen:
    """Draws one example's worth of values, text and calls from one seeded RNG."""

    def __init__(self, cat: Catalogue, rng: random.Random):
        self.cat = cat
        self.rng = rng

    # --------------------------------------------------------------------------------------- values
    def _pool(self, ref: Any) -> list:
        if isinstance(ref, str):
            if ref not in self.cat.pools:
                raise CatalogueError(f"{self.cat.source}: unknown pool {ref!r}")
            ref = self.cat.pools[ref]
        if not isinstance(ref, list) or not ref:
            raise CatalogueError(f"{self.cat.source}: a pool must be a non-empty list, got {ref!r}")
        return ref

    def _entry(self, entry: Any) -> tuple[Any, str]:
        if isinstance(entry, dict) and "value" in entry:
            says = entry.get("say")
            v = copy.deepcopy(entry["value"])
            if says:
                return v, self.rng.choice([says] if isinstance(says, str) else says)
            return v, _say(v)
        return copy.deepcopy(entry), _say(entry)

    @staticmethod
    def _entry_value(entry: Any) -> Any:
        return entry["value"] if isinstance(entry, dict) and "value" in entry else entry

    @staticmethod
    def _bound(spec_v: Any, schema_v: Any, pick, ctx: dict) -> Any:
        if isinstance(spec_v, str):
            spec_v = _get_path(ctx, spec_v)
        vals = [v for v in (spec_v, schema_v) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return pick(vals) if vals else None

    def _range(self, spec: dict, schema: dict, ctx: dict, integer: bool) -> tuple[float, float]:
        lo = self._bound(spec.get("min"), schema.get("minimum"), max, ctx)
        hi = self._bound(spec.get("max"), schema.get("maximum"), min, ctx)
        eps = 1 if integer else 10 ** -spec.get("decimals", 2)
        if isinstance(schema.get("exclusiveMinimum"), (int, float)):
            lo = max(lo if lo is not None else -math.inf, schema["exclusiveMinimum"] + eps)
        if isinstance(schema.get("exclusiveMaximum"), (int, float)):
            hi = min(hi if hi is not None else math.inf, schema["exclusiveMaximum"] - eps)
        lo = 1 if lo is None else lo
        hi = max(lo, 100) if hi is None else hi
        if lo > hi:
            raise CatalogueError(f"empty range [{lo}, {hi}] for spec {spec}")
        return lo, hi

    def _sayer(self, spec: dict, v: Any) -> str:
        says = spec.get("say")
        if isinstance(says, dict):
            key = v if isinstance(v, str) else json.dumps(v)
            forms = says.get(key)
            if forms:
                return self.rng.choice([forms] if isinstance(forms, str) else forms)
        if isinstance(v, str) and spec.get("gen") == "enum":
            return v.replace("_", " ")
        return _say(v)

    def value(self, spec: Any, schema: dict | None, ctx: dict) -> tuple[Any, str]:
        """One value for `spec` (respecting `schema`) and the way a user would say it."""
        rng = self.rng
        schema = schema or {}
        if spec is None:
            spec = _infer_spec(schema)
            if spec is None:
                raise CatalogueError(f"no value spec and none can be read from schema {schema}")
        if not isinstance(spec, dict):
            return copy.deepcopy(spec), _say(spec)
        if not any(k in spec for k in _SPEC_KEYS):  # a plain object of specs (results)
            obj: dict = {}
            for k, sub in spec.items():
                obj[k] = self.value(sub, None, ctx)[0]
            return obj, _say(obj)
        if "const" in spec:
            return copy.deepcopy(spec["const"]), self._sayer(spec, spec["const"])
        if "arg" in spec:
            if _has_path(ctx.get("a", {}), spec["arg"]):
                v = copy.deepcopy(_get_path(ctx["a"], spec["arg"]))
            elif "default" in spec:
                v = spec["default"]
            else:
                raise KeyError(f"argument {spec['arg']!r} is absent and has no default")
            return v, _say(v)
        if "extra" in spec:
            v = copy.deepcopy(_get_path(ctx.get("x", {}), spec["extra"]))
            return v, _say(v)
        if "format" in spec:
            tpl = spec["format"]
            if isinstance(tpl, list):
                tpl = rng.choice(tpl)
            elif isinstance(tpl, dict):
                tpl = self.value(tpl, None, ctx)[0]
            v = _fill(tpl, ctx)
            return v, v
        if "calc" in spec:
            v = _calc(spec["calc"], ctx)
            if isinstance(v, (int, float)):
                v = _tidy_number(v, spec.get("decimals"))
            return v, _say(v)
        if "pool" in spec and "gen" not in spec:
            entries = self._pool(spec["pool"])
            if "enum" in schema:  # a shared pool serves narrower enums too (payments take fewer currencies)
                entries = [e for e in entries if self._entry_value(e) in schema["enum"]]
                if not entries:
                    raise CatalogueError(f"pool {spec['pool']!r} has no value in enum {schema['enum']}")
            return self._entry(rng.choice(entries))

        gen = spec["gen"]
        if gen == "int":
            lo, hi = self._range(spec, schema, ctx, integer=True)
            lo, hi = math.ceil(lo), math.floor(hi)
            step = spec.get("step") or schema.get("multipleOf") or 1
            lo = math.ceil(lo / step) * step
            for _ in range(_MAX_TRIES):
                v = lo + step * rng.randint(0, (hi - lo) // step)
                if v not in spec.get("exclude", ()):
                    break
            fmt = rng.choice(spec["fmt"]) if spec.get("fmt") else "{}"
            return v, fmt.format(v)
        if gen == "number":
            decimals = spec.get("decimals", 2)
            lo, hi = self._range(spec, schema, ctx, integer=False)
            step = spec.get("step") or schema.get("multipleOf")
            if step:
                v = round(step * rng.randint(math.ceil(lo / step), math.floor(hi / step)), 10)
            else:
                grain = rng.choice(spec["round_to"]) if spec.get("round_to") else 10 ** -decimals
                places = max(decimals, 0)
                v = round(round(rng.uniform(lo, hi) / grain) * grain, places)
                if v > hi:
                    v = round(v - grain, places)
                if v < lo:
                    v = round(v + grain, places)
            v = _tidy_number(float(v))
            return v, _say(v)
        if gen == "date":
            if spec.get("after") and _has_path(ctx.get("a", {}), spec["after"]):
                base = dt.date.fromisoformat(_get_path(ctx["a"], spec["after"]))
                d = base + dt.timedelta(days=rng.randint(spec.get("min_days", 1), spec.get("max_days", 14)))
            else:
                start = dt.date.fromisoformat(spec.get("start", "2025-01-01"))
                d = start + dt.timedelta(days=rng.randint(0, spec.get("days", 730) - 1))
            style = rng.choice(spec.get("styles", ["iso", "iso", "long", "dmy"]))
            say = {"iso": d.isoformat(), "long": f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
                   "dmy": f"{d.day} {_MONTHS[d.month - 1]} {d.year}"}[style]
            return d.isoformat(), say
        if gen == "time":
            step = spec.get("step_minutes", 15)
            minutes = rng.randrange(spec.get("start_hour", 7) * 60, spec.get("end_hour", 21) * 60 + 1, step)
            h, m = divmod(minutes, 60)
            v = f"{h:02d}:{m:02d}"
            h12 = h % 12 or 12
            ampm = "AM" if h < 12 else "PM"
            forms = [v, v, f"{h12}:{m:02d} {ampm}", f"{h12}:{m:02d}{ampm.lower()}"]
            if m == 0:
                forms.append(f"{h12} {ampm}")
            return v, rng.choice(forms)
        if gen == "code":
            prefix = spec.get("prefix", "")
            if isinstance(prefix, dict):
                prefix = self.value(prefix, None, ctx)[0]
            length = spec.get("length", 8)
            if isinstance(length, list):
                length = rng.randint(length[0], length[1])
            v = prefix + "".join(rng.choice(spec.get("chars", string.digits)) for _ in range(length))
            return v, v
        if gen in ("sample", "enum_sample"):
            entries = schema.get("items", {}).get("enum") if gen == "enum_sample" else self._pool(spec["pool"])
            if not entries:
                raise CatalogueError(f"{gen} needs a pool or an enum of items")
            lo = max(spec.get("min", 1), schema.get("minItems", 0))
            hi = min(spec.get("max", 3), schema.get("maxItems", len(entries)), len(entries))
            picked = rng.sample(range(len(entries)), rng.randint(lo, hi))
            pairs = [self._entry(entries[i]) if gen == "sample" else (entries[i], self._sayer(spec, entries[i]))
                     for i in picked]
            return [p[0] for p in pairs], _join([p[1] for p in pairs])
        if gen == "objects":
            item_schema = schema.get("items", {})
            lo = max(spec.get("min", 1), schema.get("minItems", 0))
            hi = min(spec.get("max", 3), schema.get("maxItems", 10))
            items, says = [], []
            for _ in range(rng.randint(lo, hi)):
                item, item_says = {}, {}
                for f, fspec in spec["fields"].items():
                    item[f], item_says[f] = self.value(fspec, _schema_at(item_schema, f), ctx)
                items.append(item)
                says.append(_SLOT_RE.sub(lambda m: item_says[m.group(1)], spec.get("say", "")) or _say(item))
            return items, _join(says)
        if gen == "enum":
            v = copy.deepcopy(rng.choice(schema["enum"]))
            return v, self._sayer(spec, v)
        if gen == "bool":
            v = rng.random() < 0.5
            return v, self._sayer(spec, v)
        if gen == "email_from":
            name = _get_path(ctx["a"], spec["of"])
            v = f"{_slug(name)}@{spec.get('domain', 'example.com')}"
            return v, v
        if gen == "nearest":
            # The pool entry whose "at" [lat, lon] is closest, so fabricated facts fit the place asked about.
            lat, lon = _get_path(ctx, spec["lat"]), _get_path(ctx, spec["lon"])
            entries = [e for e in self._pool(spec["pool"]) if isinstance(e, dict) and "at" in e]
            if not entries:
                raise CatalogueError(f"pool {spec['pool']!r} has no entries with an 'at' position")
            best = min(entries, key=lambda e: (e["at"][0] - lat) ** 2 + (((e["at"][1] - lon + 180) % 360) - 180) ** 2)
            return self._entry(best)
        if gen == "list":
            k = rng.randint(spec.get("min", 1), spec.get("max", 3))
            v, seen = [], []
            key = spec.get("unique_by")
            for _ in range(_MAX_TRIES):
                if len(v) == k:
                    break
                item = self.value(spec["item"], None, ctx)[0]
                ident = item.get(key) if key and isinstance(item, dict) else item
                if spec.get("unique") or key:
                    if ident in seen:
                        continue  # a result listing the same headline twice looks fabricated
                    seen.append(ident)
                v.append(item)
            return v, _say(v)
        raise CatalogueError(f"unknown generator {gen!r}")

    def say_for(self, tool: _Tool, path: str, v: Any) -> str:
        """Surface form of a value fixed elsewhere (a combo): the spec's say map or pool entry if it has one."""
        spec = tool.spec(path)
        if isinstance(spec, dict):
            if isinstance(spec.get("say"), dict):
                return self._sayer(spec, v)
            if "pool" in spec and "gen" not in spec:
                for e in self._pool(spec["pool"]):
                    if isinstance(e, dict) and e.get("value") == v:
                        return self._entry(e)[1]
            if spec.get("gen") == "enum":
                return self._sayer(spec, v)
        return _say(v)

    # ---------------------------------------------------------------------------------------- calls
    def args(self, name: str, slots: list[str], *, fixed: dict | None = None, base: dict | None = None,
             avoid: list[dict] = ()) -> tuple[dict, dict, dict]:
        """Arguments for a call whose request mentions `slots` -> (arguments, surface forms, combo extras).
        `fixed` values come from elsewhere (a previous result); `base` is a previous call to vary; the result
        differs from everything in `avoid`."""
        tool = self.cat.tools[name]
        after = [s for s in slots if isinstance(tool.spec(s), dict) and tool.spec(s).get("after")]
        ordered = [s for s in slots if s not in after] + after  # a date "after" another comes second
        for _ in range(_MAX_TRIES):
            args = copy.deepcopy(base) if base else {}
            says: dict[str, str] = {}
            extras: dict = {}
            if tool.combos:
                combo = self.rng.choice(tool.combos)
                extras = copy.deepcopy(combo.get("extra", {}))
                for p, v in combo["args"].items():
                    _set_path(args, p, copy.deepcopy(v))
                    says[p] = self.say_for(tool, p, v)
            for p, v in (fixed or {}).items():
                _set_path(args, p, copy.deepcopy(v))
            ctx = {"a": args, "x": extras}
            for s in ordered:
                if s in says:
                    continue
                v, says[s] = self.value(tool.spec(s), _schema_at(tool.params, s), ctx)
                _set_path(args, s, v)
            if self._distinct_ok(tool, args) and all(args != a for a in avoid):
                break
        else:
            raise CatalogueError(f"tool {name!r}: no distinct arguments found for slots {slots}")
        args = order_arguments(tool.params, args)
        errs = call_errors(tool.openai, args)
        if errs:
            raise CatalogueError(f"catalogue bug: generated call {name}({json.dumps(args)}) fails its schema "
                                 f"{errs[0]}")
        return args, says, extras

    @staticmethod
    def _distinct_ok(tool: _Tool, args: dict) -> bool:
        for group in tool.synth.get("distinct", []):
            vals = [_get_path(args, p) for p in group if _has_path(args, p)]
            if any(_conflict(vals[i], vals[j]) for i in range(len(vals)) for j in range(i + 1, len(vals))):
                return False
        return True

    def call(self, name: str, args: dict) -> dict:
        return make_call("".join(self.rng.choice(_ALNUM) for _ in range(9)), name, copy.deepcopy(args))

    def result(self, name: str, args: dict, extras: dict) -> Any:
        spec = self.cat.tools[name].synth.get("result")
        if spec is None:
            return {"status": "ok"}
        ctx: dict = {"a": args, "x": extras}
        if isinstance(spec, dict) and not any(k in spec for k in _SPEC_KEYS):
            out: dict = {}
            ctx["r"] = out  # later fields may compute from earlier ones (converted = amount * rate)
            for k, sub in spec.items():
                out[k] = self.value(sub, None, ctx)[0]
            return out
        return self.value(spec, None, ctx)[0]

    def answer(self, name: str, args: dict, result: Any, extras: dict) -> str:
        templates = list(self.cat.tools[name].synth.get("answers", []))
        self.rng.shuffle(templates)
        ctx = {"a": args, "r": result, "x": extras}
        for tpl in templates:
            try:
                return _fill(tpl, ctx)
            except (KeyError, IndexError, ValueError):
                continue  # this wording needs an optional argument the call left out
        if isinstance(result, dict):
            return "Here's what I found: " + "; ".join(f"{k.replace('_', ' ')}: {_say(v)}"
                                                       for k, v in result.items()) + "."
        return f"Here's what I found: {_say(result)}."

    # ------------------------------------------------------------------------------------- phrasing
    def _piece(self, key: str, default: list) -> tuple[str, bool]:
        entry = self.rng.choice(self.cat.phrasing.get(key) or default)
        if isinstance(entry, dict):
            return entry.get("text", ""), bool(entry.get("lower"))
        return entry, False

    def render(self, template: str, says: dict, *, lower_all: bool = False, lower_first: bool = False) -> str:
        parts = _SLOT_RE.split(template)  # odd indices are slot names
        out = []
        for i, part in enumerate(parts):
            if i % 2:
                out.append(says[part])  # values keep their case even in lower-case style
            else:
                lit = part.lower() if lower_all else part
                out.append(_lower_first(lit) if i == 0 and lower_first else lit)
        return "".join(out)

    def utter(self, clauses: list[tuple[str, dict]], *, decorate: bool = True) -> str:
        """A user message from one or more (template, surface forms) clauses, in a randomly chosen style:
        greeting prefix and sign-off (unless not `decorate`), lower case, dropped final punctuation."""
        ph = self.cat.phrasing
        rng = self.rng
        lower_all = rng.random() < ph.get("lowercase_rate", 0.1)
        drop_punct = rng.random() < ph.get("drop_punctuation_rate", 0.1)
        prefix, lower_next = self._piece("prefixes", [""]) if decorate else ("", False)
        text = prefix
        if len(clauses) > 1:
            intro, _ = self._piece("intros", [""])
            if intro:
                text, lower_next = text + (_lower_first(intro) if lower_next else intro), False
        for i, (tpl, says) in enumerate(clauses):
            if i:
                joiner, lower_next = self._piece("joiners", [{"text": " Also, ", "lower": True}])
                text += joiner
            text += self.render(tpl, says, lower_all=lower_all, lower_first=lower_next)
        if lower_all:
            text = text[:len(prefix)].lower() + text[len(prefix):]
        if drop_punct:
            return text.rstrip(".?!")  # a hurried message, with no sign-off either
        suffix, _ = self._piece("suffixes", [""]) if decorate else ("", False)
        return text + (suffix.lower() if lower_all else suffix)

    # ------------------------------------------------------------------------------------ examples
    def tools_for(self, needed: list[str]) -> list[dict]:
        """The needed tools plus 1-4 distractors, shuffled."""
        needed = list(dict.fromkeys(needed))
        others = [n for n in self.cat.names if n not in needed]
        names = needed + self.rng.sample(others, min(len(others), self.rng.randint(1, 4)))
        self.rng.shuffle(names)
        return [self.cat.openai_tool(n) for n in names]

    def _pick_template(self, name: str) -> tuple[int, str]:
        templates = self.cat.tools[name].templates
        k = self.rng.randrange(len(templates))
        return k, templates[k]

    def single(self) -> tuple[list[dict], list[str], list[str]]:
        name = self.rng.choice(self.cat.names)
        k, tpl = self._pick_template(name)
        args, says, _ = self.args(name, _slots(tpl))
        msgs = [{"role": "user", "content": self.utter([(tpl, says)])},
                {"role": "assistant", "content": None, "tool_calls": [self.call(name, args)]}]
        return msgs, [name], [f"{name}#{k}"]

    def parallel(self) -> tuple[list[dict], list[str], list[str]]:
        rng = self.rng
        if rng.random() < 0.5:  # the same tool with different values
            name = rng.choice(self.cat.variable_names)
            ptemplates = self.cat.tools[name].synth.get("parallel_templates", [])
            if ptemplates and rng.random() < 0.5:
                k = rng.randrange(len(ptemplates))
                tpl = ptemplates[k]
                says, calls, done = {}, [], []
                for n, slots in Catalogue._parallel_groups(tpl).items():
                    args, s, _ = self.args(name, slots, avoid=done)
                    done.append(args)
                    says.update({f"{p}#{n}": v for p, v in s.items()})
                    calls.append(self.call(name, args))
                msgs = [{"role": "user", "content": self.utter([(tpl, says)])},
                        {"role": "assistant", "content": None, "tool_calls": calls}]
                return msgs, [name], [f"{name}:parallel#{k}"]
            names = [name] * rng.randint(2, 3)
        else:  # different tools
            names = rng.sample(self.cat.names, rng.randint(2, 3))
        clauses, calls, tids, done = [], [], [], []
        for name in names:
            k, tpl = self._pick_template(name)
            args, says, _ = self.args(name, _slots(tpl), avoid=[a for n, a in done if n == name])
            done.append((name, args))
            clauses.append((tpl, says))
            calls.append(self.call(name, args))
            tids.append(f"{name}#{k}")
        msgs = [{"role": "user", "content": self.utter(clauses)},
                {"role": "assistant", "content": None, "tool_calls": calls}]
        return msgs, list(dict.fromkeys(names)), list(dict.fromkeys(tids))

    def nested(self, chain: dict | None = None, k: int | None = None) -> tuple[list[dict], list[str], list[str]]:
        chain = chain if chain is not None else self.rng.choice(self.cat.chains)
        k = k if k is not None else self.rng.randrange(len(chain["templates"]))
        tpl = chain["templates"][k]
        first, second = chain["first"], chain["second"]
        s1, s2 = Catalogue._chain_slots(tpl, f"chain {chain.get('id')!r}")
        args1, says1, x1 = self.args(first, s1)
        call1 = self.call(first, args1)
        result1 = self.result(first, args1, x1)
        fixed = {}
        for path, rpath in chain["link"].items():
            v = _get_path(result1, rpath)
            target = _schema_at(self.cat.tools[second].params, path) or {}
            fixed[path] = [v] if target.get("type") == "array" and not isinstance(v, list) else v
        args2, says2, _ = self.args(second, s2, fixed=fixed)
        says = {**{f"first.{p}": v for p, v in says1.items()}, **{f"second.{p}": v for p, v in says2.items()}}
        msgs = [{"role": "user", "content": self.utter([(tpl, says)])},
                {"role": "assistant", "content": None, "tool_calls": [call1]},
                {"role": "tool", "tool_call_id": call1["id"], "name": first,
                 "content": json.dumps(result1, ensure_ascii=False)},
                {"role": "assistant", "content": None, "tool_calls": [self.call(second, args2)]}]
        return msgs, [first, second], [f"chain:{chain.get('id')}#{k}"]

    def _talk(self, kinds: tuple[str, ...]) -> tuple[list[dict], str]:
        kinds = tuple(k for k in kinds if self.cat.talk.get(k))
        kind = self.rng.choice(kinds)
        i = self.rng.randrange(len(self.cat.talk[kind]))
        q, a = self.cat.talk[kind][i]
        # "Hi! Thanks! Cheers." reads badly: greetings and thanks get no greeting or sign-off of their own.
        decorate = kind not in ("smalltalk", "thanks")
        return [{"role": "user", "content": self.utter([(q, {})], decorate=decorate)},
                {"role": "assistant", "content": a}], f"talk:{kind}#{i}"

    def no_tool(self) -> tuple[list[dict], list[str], list[str]]:
        msgs, tid = self._talk(("smalltalk", "knowledge", "knowledge", "unsupported"))
        return msgs, [], [tid]

    def _tool_turn(self, name: str, tpl: str, base: dict | None = None) -> tuple[list[dict], dict]:
        args, says, extras = self.args(name, _slots(tpl), base=base, avoid=[base] if base else [])
        call = self.call(name, args)
        result = self.result(name, args, extras)
        msgs = [{"role": "user", "content": self.utter([(tpl, says)])},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "name": name,
                 "content": json.dumps(result, ensure_ascii=False)},
                {"role": "assistant", "content": self.answer(name, args, result, extras)}]
        return msgs, args

    def chat(self) -> tuple[list[dict], list[str], list[str]]:
        """Several user turns: tool requests answered after their result, follow-ups that vary the previous
        call, questions no tool fits, and a closing thanks; about one chat in five calls no tool at all."""
        rng = self.rng
        n_turns = rng.choice([2, 2, 3, 3, 4])
        with_tools = rng.random() < 0.8
        tool_turn_at = rng.randrange(n_turns - 1) if with_tools else -1  # never only the closing turn
        msgs: list[dict] = []
        needed: list[str] = []
        tids: list[str] = []
        last: tuple[str, dict] | None = None  # (tool, arguments) of the previous turn, if it called one
        for t in range(n_turns):
            follow_ups = self.cat.tools[last[0]].synth.get("follow_ups", []) if last else []
            if follow_ups and rng.random() < 0.35:
                name, base = last
                k = rng.randrange(len(follow_ups))
                turn, args = self._tool_turn(name, follow_ups[k], base=base)
                tids.append(f"{name}:follow#{k}")
                last = (name, args)
            elif t == tool_turn_at or (with_tools and t > 0 and rng.random() < 0.4):
                name = rng.choice(self.cat.names)
                k, tpl = self._pick_template(name)
                turn, args = self._tool_turn(name, tpl)
                needed.append(name)
                tids.append(f"{name}#{k}")
                last = (name, args)
            elif t == n_turns - 1 and t > 0 and self.cat.talk.get("thanks") and rng.random() < 0.6:
                turn, tid = self._talk(("thanks",))
                tids.append(tid)
                last = None
            else:
                turn, tid = self._talk(TALK_KINDS)
                tids.append(tid)
                last = None
            msgs += turn
        return msgs, needed, list(dict.fromkeys(tids))

    def example(self, objective: str) -> Example:
        msgs, needed, tids = getattr(self, objective)()
        if self.cat.system_prompts and self.rng.random() < self.cat.phrasing.get("system_rate", 0.3):
            msgs.insert(0, {"role": "system", "content": self.rng.choice(self.cat.system_prompts)})
        meta = {"source": "synth", "objective": objective, "template": "+".join(tids), "templates": tids}
        return Example(messages=msgs, tools=self.tools_for(needed), meta=meta)


def check_mix(mix) -> None:
    """Raise ValueError unless `mix` maps objectives (`OBJECTIVES`) to non-negative numbers, not all zero."""
    if not isinstance(mix, dict):
        raise ValueError(f"mix must map objectives ({', '.join(OBJECTIVES)}) to weights, got {mix!r}")
    unknown = sorted(set(mix) - set(OBJECTIVES))
    if unknown:
        raise ValueError(f"unknown objective(s) in mix: {unknown}; expected {', '.join(OBJECTIVES)}")
    if any(not isinstance(v, (int, float)) or v < 0 for v in mix.values()):
        raise ValueError(f"mix weights must be non-negative numbers, got {mix}")
    if sum(mix.values()) <= 0:
        raise ValueError("mix gives every objective zero weight")


def _weights(cat: Catalogue, mix: dict | None) -> dict[str, float]:
    if mix is None:
        weights = {k: v for k, v in DEFAULT_MIX.items() if cat.supports(k)}
        dropped = sorted(set(DEFAULT_MIX) - set(weights))
        if dropped:
            log.warning("catalogue %s cannot generate %s; leaving them out", cat.source, ", ".join(dropped))
    else:
        check_mix(mix)
        weights = {k: float(mix[k]) for k in OBJECTIVES if mix.get(k)}
        unsupported = [k for k in weights if not cat.supports(k)]
        if unsupported:
            raise CatalogueError(f"catalogue {cat.source} cannot generate {unsupported} (no chains / talk)")
    if not weights or sum(weights.values()) <= 0:
        raise ValueError("mix gives every objective zero weight")
    return weights


def _schedule(n: int, weights: dict[str, float], seed: int) -> list[str]:
    """Exactly proportional objective counts (largest remainder), in a seeded random order."""
    total = sum(weights.values())
    shares = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(s) for k, s in shares.items()}
    by_remainder = sorted(weights, key=lambda k: (-(shares[k] - counts[k]), OBJECTIVES.index(k)))
    for k in by_remainder[:n - sum(counts.values())]:
        counts[k] += 1
    order = [k for k in OBJECTIVES if k in counts for _ in range(counts[k])]
    random.Random(f"schedule:{seed}").shuffle(order)
    return order


def synthesize(catalogue: Catalogue | dict | str | Path | None = None, n: int = 1000, *, seed: int = 0,
               mix: dict[str, float] | None = None) -> list[Example]:
    """`n` examples over the objectives single / parallel / nested / chat / no_tool, in proportions `mix`
    (default `DEFAULT_MIX`). `catalogue` is a `Catalogue`, a loaded dict, a path, or None for the packaged
    one. Each example draws from its own RNG seeded by (seed, index), so one example never depends on the
    values drawn for another."""
    if isinstance(catalogue, Catalogue):
        cat = catalogue
    elif isinstance(catalogue, dict):
        cat = Catalogue(catalogue)
    else:
        cat = load_catalogue(catalogue)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    out = []
    for i, objective in enumerate(_schedule(n, _weights(cat, mix), seed)):
        ex = _Gen(cat, random.Random(f"synth:{seed}:{i}")).example(objective)
        ex.meta.update(seed=seed, index=i)
        out.append(ex)
    return out
