"""Stage 2a: JSON Schema -> a small intermediate representation (IR) of value shapes.

Both the Lark grammar (`lark_emit`) and the canonical renderer (`render`) are derived from this one IR, so the
text we render for a value is, by construction, the text the grammar was built to accept.

Resolution of `$ref`, merging of `allOf` and distribution of `anyOf`/`oneOf` happen here. Keywords a
context-free grammar cannot express exactly follow one written policy (see `Policy` below and the README):
strict mode raises `UnsupportedKeywordError` naming the keyword and path; lenient mode relaxes that one
constraint (the grammar over-accepts, never under-accepts), records it, and the `jsonschema` check on the
parsed call catches what the grammar let through.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from referencing.jsonschema import DRAFT202012

from . import regex as rx
from ..errors import ToolSchemaError, UnsupportedKeywordError

TYPES = ("null", "boolean", "object", "array", "string", "number", "integer")

# Keywords that constrain nothing (annotations) or that we handle; anything else is unknown and ignored, as
# JSON Schema itself ignores unknown keywords.
_RELAXED_ALWAYS = {
    "multipleOf": "multiples are not expressible in the grammar",
    "uniqueItems": "item uniqueness is not context-free",
    "contains": "contains is not expressed", "minContains": "contains is not expressed",
    "maxContains": "contains is not expressed",
    "minProperties": "property counts are not expressed", "maxProperties": "property counts are not expressed",
    "propertyNames": "property-name schemas are not expressed",
    "dependentRequired": "dependencies are not expressed", "dependentSchemas": "dependencies are not expressed",
    "dependencies": "dependencies are not expressed",
    "not": "negation is not expressed",
    "if": "conditionals are not expressed",
    "unevaluatedItems": "unevaluatedItems is not expressed",
}
# Arrays longer than this are not counted out in the grammar (the bound is relaxed): repetition ranges expand
# into alternatives in lark, and a model never needs hundreds of counted items.
MAX_COUNTED_ITEMS = 64


@dataclass(frozen=True)
class Relaxation:
    path: str
    keyword: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.keyword} ({self.detail})"


# ---------------------------------------------------------------------------------------------- IR nodes
class Node:
    hint: str = "value"


@dataclass(eq=False)
class AnyNode(Node):
    hint: str = "json_value"


@dataclass(eq=False)
class NeverNode(Node):
    hint: str = "never"


@dataclass(eq=False)
class ConstNode(Node):
    """A finite set of JSON values (enum / const / boolean / null)."""
    values: list
    hint: str = "value"


@dataclass(eq=False)
class ScalarNode(Node):
    """A terminal: strings, integers and numbers, each a regex over the value's JSON text."""
    kind: str  # "string" | "integer" | "number"
    regex: str
    hint: str = "value"


@dataclass(eq=False)
class Prop:
    key: str
    node: Node
    required: bool


@dataclass(eq=False)
class ObjectNode(Node):
    props: list  # list[Prop], in schema order
    extra: Node | None = None  # schema of undeclared keys; None = closed
    extra_key_regex: str | None = None  # None = any JSON string
    hint: str = "object"


@dataclass(eq=False)
class ArrayNode(Node):
    prefix: list  # list[Node]
    rest: Node | None  # None = no items beyond the prefix
    min_items: int = 0
    max_items: int | None = None
    hint: str = "array"


@dataclass(eq=False)
class UnionNode(Node):
    options: list
    hint: str = "value"


@dataclass(eq=False)
class RefNode(Node):
    """Indirection so that recursive schemas become recursive rules; `target` is filled in after."""
    name: str
    target: Node | None = None
    hint: str = "ref"


# ---------------------------------------------------------------------------------------------- helpers
def _json_equal(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _json_key(a) -> tuple:
    """A hashable key with `_json_key(a) == _json_key(b)` exactly when `_json_equal(a, b)` (so enum members
    de-duplicate in linear time: 10,000 values used to take 10^8 comparisons)."""
    if isinstance(a, bool):
        return ("bool", a)
    if isinstance(a, (int, float)):
        return ("num", int(a) if isinstance(a, float) and a.is_integer() else a)
    if isinstance(a, list):
        return ("list", tuple(_json_key(x) for x in a))
    if isinstance(a, dict):
        return ("dict", tuple(sorted((k, _json_key(v)) for k, v in a.items())))
    return (type(a).__name__, a)


def _type_set(schema: dict) -> set[str] | None:
    t = schema.get("type")
    if t is None:
        return None
    ts = {t} if isinstance(t, str) else set(t)
    return ts


def _intersect_types(a: set | None, b: set | None) -> set | None:
    if a is None:
        return b
    if b is None:
        return a
    out = a & b
    if "integer" in a and "number" in b or "integer" in b and "number" in a:
        out.add("integer")
    return out


_MIN_KEYS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")
_MAX_KEYS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")
_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly",
                "$schema", "$id", "$anchor", "$dynamicAnchor", "$vocabulary", "$defs", "definitions",
                "contentMediaType", "contentEncoding", "contentSchema", "format"}


def merge_schemas(a: Any, b: Any, dropped: list | None = None) -> Any:
    """A schema accepting at least every value both `a` and `b` accept (their intersection, or a superset of
    it where exact intersection is not expressible). Used for `allOf` and to push sibling keywords into
    `anyOf`/`oneOf` branches; superset-only, so a merge never causes a false reject."""
    if a is True or a == {}:
        return copy.copy(b) if isinstance(b, dict) else b
    if b is True or b == {}:
        return copy.copy(a) if isinstance(a, dict) else a
    if a is False or b is False:
        return False
    if dropped is not None:
        # additionalProperties / items do not look into sibling applicators: after a merge they would also
        # cover the other side's properties / prefixItems, which over-accepts.
        for closed, declared in (("additionalProperties", "properties"), ("items", "prefixItems")):
            for x, y in ((a, b), (b, a)):
                if closed in x and declared in y and not set(map(str, y[declared])) <= set(
                        map(str, x.get(declared, {}) if isinstance(x.get(declared), dict) else x.get(declared, []))):
                    dropped.append(closed)
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
            continue
        w = out[k]
        if k == "type":
            ts = _intersect_types(_type_set(a), _type_set(b))
            if not ts:
                return False
            out[k] = sorted(ts, key=TYPES.index)
        elif k in ("properties", "patternProperties", "$defs", "definitions"):
            merged = dict(w)
            for pk, pv in v.items():
                merged[pk] = merge_schemas(merged[pk], pv, dropped) if pk in merged else pv
            out[k] = merged
        elif k == "required":
            out[k] = list(dict.fromkeys(list(w) + list(v)))
        elif k == "enum":
            out[k] = [x for x in w if any(_json_equal(x, y) for y in v)]
        elif k == "const":
            if not _json_equal(w, v):
                return False
        elif k in _MIN_KEYS:
            out[k] = max(w, v)
        elif k in _MAX_KEYS:
            out[k] = min(w, v)
        elif k in ("unevaluatedProperties", "unevaluatedItems"):
            # What counts as "evaluated" differs on each side; dropping the keyword is the safe superset.
            if w != v:
                del out[k]
                if dropped is not None:
                    dropped.append(k)
        elif k in ("items", "additionalProperties", "contains", "propertyNames"):
            out[k] = merge_schemas(w, v, dropped)
        elif k == "prefixItems":
            n = max(len(w), len(v))
            out[k] = [merge_schemas(w[i] if i < len(w) else True, v[i] if i < len(v) else True, dropped)
                      for i in range(n)]
        elif k in ("anyOf", "oneOf", "allOf"):
            # Keep one side in place and nest the other: compiling distributes/merges it in turn.
            out.setdefault("allOf", [])
            out["allOf"] = list(out["allOf"]) + [{k: v}] if k != "allOf" else list(w) + list(v)
        # Any other conflicting keyword keeps `a`'s value: a superset of the intersection.
    return out


# ---------------------------------------------------------------------------------------------- drafts
LEGACY_DRAFTS = {"http://json-schema.org/draft-07/schema": 7, "http://json-schema.org/draft-06/schema": 6,
                 "http://json-schema.org/draft-04/schema": 4}


def legacy_draft(schema: Any) -> int | None:
    """4, 6 or 7 when `schema` declares that draft in `$schema`, else None (2019-09 / 2020-12 rules)."""
    meta = schema.get("$schema") if isinstance(schema, dict) else None
    return LEGACY_DRAFTS.get(meta.rstrip("#")) if isinstance(meta, str) else None


def upgrade_keywords(schema: dict, draft: int) -> dict:
    """One schema object of draft 4/6/7, rewritten (this level only) in the 2020-12 keywords that mean the
    same, as `jsonschema.validators.validator_for` would read it:
    - `$ref` replaces every sibling keyword (the siblings are ignored, not and-ed);
    - `items: [...]` is `prefixItems`, and `additionalItems` is then `items`;
    - `dependencies` splits into `dependentRequired` (lists) and `dependentSchemas` (schemas);
    - draft 4: boolean `exclusiveMaximum` / `exclusiveMinimum` turn `maximum` / `minimum` exclusive."""
    if "$ref" in schema:
        return {"$ref": schema["$ref"]}
    out = dict(schema)
    if isinstance(out.get("items"), list):
        out["prefixItems"] = out.pop("items")
        if "additionalItems" in out:
            out["items"] = out.pop("additionalItems")
    else:
        out.pop("additionalItems", None)  # ignored when items is not an array
    deps = out.pop("dependencies", None)
    if isinstance(deps, dict):
        req = {k: v for k, v in deps.items() if isinstance(v, list)}
        sch = {k: v for k, v in deps.items() if not isinstance(v, list)}
        if req:
            out["dependentRequired"] = req
        if sch:
            out["dependentSchemas"] = sch
    if draft == 4:
        for flag, bound in (("exclusiveMaximum", "maximum"), ("exclusiveMinimum", "minimum")):
            if isinstance(out.get(flag), bool):
                if out.pop(flag) and bound in out:
                    out[flag] = out.pop(bound)
    return out


# ---------------------------------------------------------------------------------------------- builder
@dataclass
class Policy:
    strict: bool = False
    closed_objects: bool = False  # tool arguments: objects with declared properties reject undeclared keys
    max_string_length: int | None = None  # bound for strings that declare no maxLength
    max_array_items: int | None = None  # bound for arrays that declare no maxItems
    assert_formats: bool = False  # 2020-12 makes `format` an annotation unless a vocabulary asserts it
    tool: str | None = None  # for error messages


class IRBuilder:
    """Turns one JSON Schema document into an IR `Node`. One builder per document (per tool)."""

    def __init__(self, schema: Any, policy: Policy, *, registry: referencing.Registry | None = None,
                 path_prefix: tuple = ()):
        self.policy = policy
        self.relaxations: list[Relaxation] = []
        self.path_prefix = path_prefix
        self.root = schema
        resource = referencing.Resource.from_contents(schema, default_specification=DRAFT202012) \
            if isinstance(schema, (dict, bool)) else None
        reg = registry if registry is not None else referencing.Registry()
        base = (resource.id() if resource is not None else None) or "urn:constrained-fc:root"
        reg = reg.with_resource(base, resource).crawl()
        self.resolver = reg.resolver(base_uri=base)
        self._refs: dict[tuple, RefNode] = {}
        self._draft = legacy_draft(schema)  # the draft in force where the builder is (None: 2020-12)

    # -- policy -------------------------------------------------------------------------------------------
    def _fmt(self, path) -> str:
        from ..errors import format_path
        return format_path(self.path_prefix + tuple(path))

    def relax(self, path, keyword: str, detail: str) -> None:
        if self.policy.strict:
            raise UnsupportedKeywordError(f"cannot be expressed exactly in a grammar: {detail}",
                                          tool=self.policy.tool, path=self.path_prefix + tuple(path),
                                          keyword=keyword)
        self.relaxations.append(Relaxation(self._fmt(path), keyword, detail))

    def error(self, path, keyword, message):
        return ToolSchemaError(message, tool=self.policy.tool, path=self.path_prefix + tuple(path),
                               keyword=keyword)

    # -- entry --------------------------------------------------------------------------------------------
    def build(self, hint: str) -> Node:
        meta = self.root.get("$schema") if isinstance(self.root, dict) else None
        if isinstance(meta, str) and meta.rstrip("#") not in KNOWN_METASCHEMAS:
            raise self.error(("$schema",), "$schema", f"unknown meta-schema {meta!r}: its vocabularies may "
                             "change what the keywords mean, so no grammar is produced")
        return self.node(self.root, (), hint, self.resolver)

    def _lookup(self, ref: str, path, resolver):
        try:
            return resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as e:
            raise self.error(path, "$ref", f"unresolvable reference {ref!r} ({type(e).__name__})") from None
        except Exception as e:  # a malformed pointer etc. must still name the place
            raise self.error(path, "$ref", f"cannot resolve {ref!r}: {e}") from None

    def node(self, schema: Any, path: tuple, hint: str, resolver) -> Node:
        if schema is True:
            return AnyNode()
        if schema is False:
            return NeverNode()
        if not isinstance(schema, dict):
            raise self.error(path, None, f"a schema must be an object or a boolean, got {type(schema).__name__}")
        declared = legacy_draft(schema) if "$schema" in schema else self._draft
        if declared != self._draft:  # a sub-schema that declares its own draft: in force below it
            outer, self._draft = self._draft, declared
            try:
                return self.node(schema, path, hint, resolver)
            finally:
                self._draft = outer
        if self._draft is not None:
            schema = upgrade_keywords(schema, self._draft)
        if "$id" in schema and path:
            try:
                resolver = resolver.in_subresource(
                    referencing.Resource.from_contents(schema, default_specification=DRAFT202012))
            except Exception:
                pass
        ref_key = "$ref" if "$ref" in schema else ("$dynamicRef" if "$dynamicRef" in schema else None)
        if ref_key:
            rest = {k: v for k, v in schema.items() if k != ref_key and k not in _ANNOTATIONS}
            if not rest:
                return self._ref_node(schema[ref_key], path + (ref_key,), hint, resolver)
            # A $ref beside other keywords means both apply (2020-12): an allOf.
            resolved = self._lookup(schema[ref_key], path + (ref_key,), resolver)
            schema = self._merge({k: v for k, v in schema.items() if k != ref_key}, resolved.contents, path)
            if schema is False:
                return NeverNode()
            return self.node(schema, path, hint, resolver)
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for i, sub in enumerate(schema["allOf"]):
                sub = self._expand_ref(sub, path + ("allOf", i), resolver)
                merged = self._merge(merged, sub, path)
                if merged is False:
                    return NeverNode()
            return self.node(merged, path, hint, resolver)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                for kw in ("unevaluatedProperties", "unevaluatedItems"):
                    if kw in rest:
                        # Properties evaluated by any successful branch count: per-branch closing is too strict.
                        del rest[kw]
                        self.relax(path, kw, "not applied across anyOf/oneOf branches")
                if key == "oneOf" and len(schema[key]) > 1:
                    self.relax(path, "oneOf", "exclusivity is not enforced (treated as anyOf)")
                constrained = {k for k in rest if k not in _ANNOTATIONS}
                options = []
                for i, sub in enumerate(schema[key]):
                    if constrained:
                        sub = self._merge(rest, self._expand_ref(sub, path + (key, i), resolver), path)
                    options.append(self.node(sub, path + (key, i), f"{hint}_{i}" if i else hint, resolver))
                return _union(options, hint)
        for kw, detail in _RELAXED_ALWAYS.items():
            if kw in schema:
                self.relax(path, kw, detail)
        if "enum" in schema or "const" in schema:
            return self._enum(schema, path, hint)
        types = _type_set(schema)
        if types is None or set(types) >= set(TYPES) - {"integer"}:
            if not any(k in schema for k in _TYPED_KEYWORDS):
                return AnyNode()
            types = set(TYPES)
        unknown = types - set(TYPES)
        if unknown:
            raise self.error(path + ("type",), "type", f"unknown type(s) {sorted(unknown)}")
        if "number" in types:
            types.discard("integer")
        branches = []
        for t in TYPES:
            if t in types:
                branches.append(getattr(self, f"_t_{t}")(schema, path, hint, resolver))
        return _union(branches, hint)

    def _merge(self, a, b, path):
        dropped: list = []
        out = merge_schemas(a, b, dropped)
        for kw in dict.fromkeys(dropped):
            self.relax(path, kw, "differs between merged subschemas; relaxed")
        return out

    def _expand_ref(self, sub, path, resolver, depth: int = 0):
        """Inline a top-level $ref so that allOf/anyOf merging sees the target's keywords."""
        while isinstance(sub, dict) and "$ref" in sub and depth < 16:
            resolved = self._lookup(sub["$ref"], path + ("$ref",), resolver)
            rest = {k: v for k, v in sub.items() if k != "$ref"}
            sub = self._merge(rest, resolved.contents, path) if rest else resolved.contents
            depth += 1
        return sub

    def _ref_node(self, ref: str, path, hint, resolver) -> Node:
        resolved = self._lookup(ref, path, resolver)
        key = (id(resolved.contents),)
        if key in self._refs:
            return self._refs[key]
        name = ref.rstrip("/").split("/")[-1].split("#")[-1] or "root"
        rnode = RefNode(name=name, hint=name)
        self._refs[key] = rnode
        rnode.target = self.node(resolved.contents, path, name, resolved.resolver)
        return rnode

    # -- enum / const -------------------------------------------------------------------------------------
    def _enum(self, schema, path, hint) -> Node:
        values = list(schema["enum"]) if "enum" in schema else None
        if "const" in schema:
            values = [schema["const"]] if values is None else [v for v in values if _json_equal(v, schema["const"])]
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const") and k not in _ANNOTATIONS}
        if rest:
            # Keep only members the rest of the schema admits; exact, and cheap (enums are short).
            try:
                v = jsonschema.Draft202012Validator(rest)
                values = [x for x in values if v.is_valid(x)]
            except Exception:
                pass  # a sibling we cannot evaluate standalone (a relative $ref): keep all members
        out: list = []
        seen: set = set()
        for x in values:
            key = (type(x).__name__, _json_key(x))  # 1 and 1.0 stay two members, as before
            if key not in seen:
                seen.add(key)
                out.append(x)
        return ConstNode(out, hint=hint) if out else NeverNode()

    # -- per-type branches --------------------------------------------------------------------------------
    def _t_null(self, schema, path, hint, resolver):
        return ConstNode([None], hint="null")

    def _t_boolean(self, schema, path, hint, resolver):
        return ConstNode([True, False], hint="boolean")

    def _bounds(self, schema):
        lo = schema.get("minimum")
        lo_x = False
        if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], (int, float)) \
                and not isinstance(schema["exclusiveMinimum"], bool):
            if lo is None or schema["exclusiveMinimum"] >= lo:
                lo, lo_x = schema["exclusiveMinimum"], True
        hi = schema.get("maximum")
        hi_x = False
        if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], (int, float)) \
                and not isinstance(schema["exclusiveMaximum"], bool):
            if hi is None or schema["exclusiveMaximum"] <= hi:
                hi, hi_x = schema["exclusiveMaximum"], True
        return lo, lo_x, hi, hi_x

    def _t_integer(self, schema, path, hint, resolver):
        lo, lo_x, hi, hi_x = self._bounds(schema)
        ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
        ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
        if ilo is not None and ihi is not None and ilo > ihi:
            return NeverNode()
        bounded = ilo is not None or ihi is not None
        return ScalarNode("integer", rx.int_range(ilo, ihi), hint=f"{hint}_int" if bounded else "integer")

    def _t_number(self, schema, path, hint, resolver):
        lo, lo_x, hi, hi_x = self._bounds(schema)
        if lo is not None and hi is not None and (lo > hi or lo == hi and (lo_x or hi_x)):
            return NeverNode()
        try:
            regex, exact = rx.number_range(lo, hi, lo_x, hi_x)
        except ValueError:  # bounds closer than the regex builder resolves: keep every number, checked later
            regex, exact = rx.number_range(None, None)[0], False
        if not exact:
            kw = [k for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in schema]
            self.relax(path, kw[0] if kw else "minimum", "number bounds are only partly expressed")
        bounded = lo is not None or hi is not None
        return ScalarNode("number", regex, hint=f"{hint}_num" if bounded else "number")

    def _t_string(self, schema, path, hint, resolver):
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        hi = None if hi is None else int(hi)
        if hi is not None and lo > hi:
            return NeverNode()
        if "pattern" in schema:
            try:
                regex, exact = rx.pattern_regex(schema["pattern"])
                if not exact:
                    self.relax(path + ("pattern",), "pattern", "pattern is only partly expressed")
                if "minLength" in schema or hi is not None:
                    self.relax(path, "maxLength" if hi is not None else "minLength",
                               "length bounds are not combined with a pattern")
                if "format" in schema:
                    self.relax(path, "format", "format is not combined with a pattern")
                return ScalarNode("string", regex, hint=f"{hint}_str")
            except rx.UnsupportedPattern as e:
                self.relax(path + ("pattern",), "pattern", f"unsupported regex construct: {e}")
        fmt = schema.get("format")
        if isinstance(fmt, str) and self.policy.assert_formats:
            regex = rx.format_regex(fmt)
            if regex is not None and self.policy.max_string_length is not None and "maxLength" not in schema:
                # The run-time length budget applies to formatted strings too. A regex cannot count the whole
                # string, so email gets RFC 5321's local-part bound (64) and at most 6 domain labels, and every
                # other unbounded repetition is capped at a quarter of the budget.
                regex = _BOUNDED_EMAIL if fmt == "email" else rx.bound_repeats(
                    regex, max(8, self.policy.max_string_length // 4))
            if regex is not None:
                if fmt in _INEXACT_FORMATS:
                    self.relax(path, "format", _INEXACT_FORMATS[fmt])
                if "minLength" in schema or hi is not None:
                    self.relax(path, "maxLength" if hi is not None else "minLength",
                               "length bounds are not combined with a format")
                return ScalarNode("string", regex, hint=fmt.replace("-", "_"))
            if fmt in _SPEC_FORMATS or fmt in jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers:
                self.relax(path, "format", f"format {fmt!r} is not expressed in the grammar")
        default_bound = hi is None and self.policy.max_string_length is not None
        if default_bound:
            hi = max(self.policy.max_string_length, lo)
        if lo == 0 and hi is None:
            return ScalarNode("string", rx.string_regex(), hint="string")
        name = "bounded_string" if default_bound and lo == 0 else f"{hint}_str"
        return ScalarNode("string", rx.string_regex(lo, hi), hint=name)

    def _t_array(self, schema, path, hint, resolver):
        prefix_schemas = schema.get("prefixItems", [])
        prefix = [self.node(s, path + ("prefixItems", i), f"{hint}_{i}", resolver)
                  for i, s in enumerate(prefix_schemas)]
        items = schema.get("items", True)
        rest = None if items is False else self.node(items, path + ("items",), f"{hint}_item", resolver)
        if isinstance(rest, NeverNode):
            rest = None
        lo = int(schema.get("minItems", 0))
        hi = schema.get("maxItems")
        hi = None if hi is None else int(hi)
        if rest is None:
            hi = len(prefix) if hi is None else min(hi, len(prefix))
        # A prefix item that can never match caps the array before it.
        for i, p in enumerate(prefix):
            if isinstance(p, NeverNode):
                prefix = prefix[:i]
                rest = None
                hi = i if hi is None else min(hi, i)
                break
        if hi is None and self.policy.max_array_items is not None and rest is not None:
            hi = max(lo, len(prefix) + self.policy.max_array_items)
        if hi is not None and lo > hi:
            return NeverNode()
        if hi is not None and hi - len(prefix) > MAX_COUNTED_ITEMS:
            self.relax(path, "maxItems", f"bounds above {MAX_COUNTED_ITEMS} items are not counted")
            hi = None
        if lo - len(prefix) > MAX_COUNTED_ITEMS:
            self.relax(path, "minItems", f"bounds above {MAX_COUNTED_ITEMS} items are not counted")
            lo = len(prefix) + MAX_COUNTED_ITEMS
        return ArrayNode(prefix, rest, lo, hi, hint=hint)

    def _t_object(self, schema, path, hint, resolver):
        props_schema = schema.get("properties", {}) or {}
        required = list(schema.get("required", []))
        pattern_props = schema.get("patternProperties", {}) or {}
        if "additionalProperties" in schema:
            ap = schema["additionalProperties"]
        elif "unevaluatedProperties" in schema:
            # After allOf/$ref merging every declared property counts as evaluated, so this acts like
            # additionalProperties on the merged schema. Keywords that evaluate properties conditionally
            # (dependentSchemas, if/then/else) or a $ref's own scope make that approximate: noted as relaxed.
            ap = schema["unevaluatedProperties"]
            if any(k in schema for k in ("dependentSchemas", "if", "then", "else")):
                ap = True
            self.relax(path, "unevaluatedProperties", "approximated as additionalProperties after merging")
        elif self.policy.closed_objects and ("properties" in schema or pattern_props):
            ap = False
        else:
            ap = True
        implicit_close = "additionalProperties" not in schema and "unevaluatedProperties" not in schema
        props = []
        for key, sub in props_schema.items():
            pnode = self.node(sub, path + ("properties", key), f"{hint}_{key}", resolver)
            req = key in required
            if isinstance(pnode, NeverNode):
                if req:
                    return NeverNode()
                if ap is not False:
                    self.relax(path + ("properties", key), "properties",
                               "no value is valid here, but undeclared keys cannot exclude this name")
                continue
            props.append(Prop(key, pnode, req))
        for key in required:
            if key not in props_schema:
                if ap is False and not implicit_close and not pattern_props:
                    return NeverNode()
                extra_schema = ap if (ap is not False) else True
                props.append(Prop(key, self.node(extra_schema, path + ("required",), f"{hint}_{key}", resolver),
                                  True))
        extra = None
        extra_key = None
        if pattern_props:
            self.relax(path, "patternProperties", "values are checked against any matching pattern's schema")
            keys = []
            nodes = []
            for i, (pat, sub) in enumerate(pattern_props.items()):
                try:
                    keys.append(rx.pattern_regex(pat)[0])
                except rx.UnsupportedPattern:
                    keys.append(None)
                nodes.append(self.node(sub, path + ("patternProperties", pat), f"{hint}_pattern_{i}", resolver))
            if ap is not False or None in keys:
                extra_key = None  # any key may be extra
                ap_node = self.node(ap, path + ("additionalProperties",), f"{hint}_extra", resolver) \
                    if ap is not False else NeverNode()
                extra = _union(nodes + [ap_node], f"{hint}_extra")
            else:
                extra_key = "|".join(f"(?:{k})" for k in keys)
                extra = _union(nodes, f"{hint}_extra")
            if isinstance(extra, NeverNode):
                extra = None
        elif ap is not False:
            extra = self.node(ap, path + ("additionalProperties",), f"{hint}_extra", resolver)
            if isinstance(extra, NeverNode):
                extra = None
            elif self.policy.max_string_length is not None:
                extra_key = rx.string_regex(0, self.policy.max_string_length)
        return ObjectNode(props, extra, extra_key, hint=hint)


# Formats whose regex over-accepts a little (measured on the official optional format tests).
_INEXACT_FORMATS = {"time": "leap seconds at non-zero offsets are only partly checked",
                    "hostname": "total length and punycode (xn--) rules are not checked"}
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_BOUNDED_EMAIL = (r'"[A-Za-z0-9!#$%&\'*+/=?^_`{|}~-](?:[A-Za-z0-9!#$%&\'*+/=?^_`{|}~.-]{0,62}'
                  r"[A-Za-z0-9!#$%&\'*+/=?^_`{|}~-])?@" + rf"(?:{_LABEL}\.){{0,5}}{_LABEL}" + '"')
# The formats draft 2020-12 defines; asserting one we cannot express is a relaxation, not a silent pass.
_SPEC_FORMATS = {"date-time", "date", "time", "duration", "email", "idn-email", "hostname", "idn-hostname", "ipv4",
                 "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template", "json-pointer",
                 "relative-json-pointer", "regex"}
# Meta-schemas whose vocabularies we implement; a custom one may switch validation off, so it is refused.
KNOWN_METASCHEMAS = {
    "https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2019-09/schema",
    "http://json-schema.org/draft-07/schema", "http://json-schema.org/draft-06/schema",
    "http://json-schema.org/draft-04/schema"}

_TYPED_KEYWORDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
                   "pattern", "format", "items", "prefixItems", "minItems", "maxItems", "properties",
                   "required", "additionalProperties", "patternProperties", "unevaluatedProperties"}


def _union(options: list, hint: str) -> Node:
    flat = []
    for o in options:
        if isinstance(o, NeverNode):
            continue
        if isinstance(o, UnionNode):
            flat.extend(o.options)
        else:
            flat.append(o)
    if not flat:
        return NeverNode()
    if any(isinstance(o, AnyNode) for o in flat):
        return AnyNode()
    if len(flat) == 1:
        return flat[0]
    return UnionNode(flat, hint=hint)
