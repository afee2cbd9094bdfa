"""Stage 2b: the schema IR -> Lark grammar text, and the canonical renderer of values.

The grammar text is the artefact: deterministic (the same schema gives byte-identical text, so it can be
cached by hash), readable (rule names come from tool and property names), and run by llguidance both to
constrain generation and to decide which texts are accepted (language.py), so one engine decides. It also
stays parseable by the `lark` package (Earley; `lark_parser`, which the read-back benchmark times against),
so it is written in the subset of Lark both engines share: lowercase rules, uppercase regex terminals,
JSON-escaped string literals, `?`/`*`/`~ n..m` repetition, and regexes without look-around.
"""
from __future__ import annotations

import functools
import json
import math
import keyword
import re
import string
import warnings
from importlib import resources
from typing import Any

import lark

from ..errors import ConstrainedFCError, ToolSchemaError
from .language import in_language
from .tools import check_schema
from .schema_ir import (AnyNode, ArrayNode, ConstNode, IRBuilder, NeverNode, Node, ObjectNode, Policy, RefNode,
                        Relaxation, ScalarNode, UnionNode, _json_equal)
from . import regex as rx

WHITESPACE_MODES = ("canonical", "flexible")
DIALECTS = ("json", "python")
_NEVER_REGEX = r"[^\s\S]"
_FLEX_WS = r"[ \t\n\r]+"
_PY_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENT_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_IDENT_REST = "0123456789" + _IDENT_FIRST


def _char_class(chars: str) -> str:
    """A regex character class of exactly `chars` (ASCII identifier characters), runs written as ranges."""
    codes = sorted(set(map(ord, chars)))
    parts, i = [], 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        parts.append(chr(codes[i]) if i == j else f"{chr(codes[i])}-{chr(codes[j])}")
        i = j + 1
    return "[" + "".join(parts) + "]"


def _identifier_except(words) -> str:
    """A regex (no look-ahead: llguidance and lark both run it) for ASCII identifiers other than `words`.
    Built from the trie of `words`: at each node, either follow a word's next letter, or leave the trie with
    any other identifier character and continue freely, or stop where no excluded word ends."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def at(node: dict, first: bool) -> str:
        allowed = _IDENT_FIRST if first else _IDENT_REST
        alts = [f"{re.escape(ch)}{at(child, False)}" for ch, child in sorted(node.items()) if ch]
        rest = "".join(c for c in allowed if c not in node)
        if rest:
            alts.append(f"{_char_class(rest)}[A-Za-z0-9_]*")
        if not first and "" not in node:
            alts.append("")
        return "(?:" + "|".join(alts) + ")"

    return at(trie, True)


# Keyword-argument names of the python format: identifiers that are not Python keywords (`f(class=1)` is a
# SyntaxError). Soft keywords (match, case, type, _) are valid argument names.
_PY_KWARG = re.compile(_identifier_except(keyword.kwlist))


class RelaxedSchemaWarning(UserWarning):
    """Lenient mode relaxed a keyword the grammar cannot express; the jsonschema check covers it."""


def load_template(name: str) -> string.Template:
    return string.Template(resources.files("constrained_fc.compiler.grammars").joinpath(name).read_text("utf-8"))


def lark_literal(text: str) -> str:
    # JSON string syntax is read the same way by lark and by llguidance's Lark front end.
    return json.dumps(text, ensure_ascii=False)


def lark_regex(regex: str) -> str:
    """Wrap a regex as a Lark /.../ literal, escaping unescaped slashes."""
    out, escaped = [], False
    for ch in regex:
        if ch == "/" and not escaped:
            out.append("\\/")
        else:
            out.append(ch)
        escaped = (ch == "\\" and not escaped)
    return "/" + "".join(out) + "/"


def rule_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = "r_" + name
    return name


# ---------------------------------------------------------------------------------------------- dialects
class Dialect:
    """How values are spelled: JSON, or Python literals (the python call format)."""

    def __init__(self, name: str = "json", whitespace: str = "canonical"):
        if name not in DIALECTS:
            raise ConstrainedFCError(f"unknown dialect {name!r}; expected one of {DIALECTS}")
        if whitespace not in WHITESPACE_MODES:
            raise ConstrainedFCError(f"unknown whitespace mode {whitespace!r}; expected one of {WHITESPACE_MODES}")
        self.name = name
        self.whitespace = whitespace
        self.literals = {True: "true", False: "false", None: "null"} if name == "json" else \
            {True: "True", False: "False", None: "None"}

    @property
    def flexible(self) -> bool:
        return self.whitespace == "flexible"

    def dump(self, value: Any) -> str:
        """Canonical text of a value with no schema information (keys in the given order)."""
        if value is None or isinstance(value, bool):
            return self.literals[value]
        if isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{value!r} is not a JSON number")
            return json.dumps(value)
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(self.dump(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {self.dump(v)}"
                                   for k, v in value.items()) + "}"
        raise ValueError(f"cannot render a value of type {type(value).__name__}")


class _NoFit(ValueError):
    pass


# ---------------------------------------------------------------------------------------------- emitter
class LarkEmitter:
    """Writes IR nodes as Lark rules and terminals, deduplicating identical rules and regexes."""

    def __init__(self, dialect: Dialect):
        self.d = dialect
        self.rules: dict[str, str] = {}
        self.terminals: dict[str, str] = {}
        self._rule_by_body: dict[str, str] = {}
        self._term_by_regex: dict[str, str] = {}
        self._memo: dict[int, str] = {}
        self._taken: set[str] = {"start", "tool_calls", "tool_call"}
        self._base_added = False

    # -- names ----------------------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        base = rule_name(hint)
        name, i = base, 2
        while name in self._taken:
            name, i = f"{base}_{i}", i + 1
        self._taken.add(name)
        return name

    def terminal(self, hint: str, regex: str) -> str:
        if regex in self._term_by_regex:
            return self._term_by_regex[regex]
        name = self.fresh(hint).upper()
        self.terminals[name] = regex
        self._term_by_regex[regex] = name
        return name

    def rule(self, hint: str, body: str, *, name: str | None = None) -> str:
        if name is None and body in self._rule_by_body:
            return self._rule_by_body[body]
        name = name or self.fresh(hint)
        self.rules[name] = body
        self._rule_by_body.setdefault(body, name)
        return name

    # -- separators -----------------------------------------------------------------------------------------
    def sep(self, ch: str) -> str:
        if self.d.flexible:
            return f"WS? {lark_literal(ch)} WS?"
        return lark_literal({",": ", ", ":": ": "}.get(ch, ch))

    def open(self, ch: str) -> str:
        return f"{lark_literal(ch)} WS?" if self.d.flexible else lark_literal(ch)

    def close(self, ch: str) -> str:
        return f"WS? {lark_literal(ch)}" if self.d.flexible else lark_literal(ch)

    def key(self, key: str, kwargs: bool = False) -> str:
        if kwargs:
            return lark_literal(f"{key}=")
        text = json.dumps(key, ensure_ascii=False)
        if self.d.flexible:
            return f"{lark_literal(text)} {self.sep(':')}"
        return lark_literal(text + ": ")

    def ensure_base(self) -> str:
        if not self._base_added:
            self._base_added = True
            self._taken.update({"any_value", "any_object", "any_member", "any_array"})
            # The terminals may already exist under another name (a property's plain string, say): the
            # template is filled with whatever name the regex has.
            self._base_terms = (self.terminal("string", rx.string_regex()),
                                self.terminal("number", rx.number_range(None, None)[0]))
        return "any_value"

    def base_text(self) -> str:
        if not self._base_added:
            return ""
        lit = self.d.literals
        return load_template("json_base.lark").substitute(
            true=lark_literal(lit[True]), false=lark_literal(lit[False]), null=lark_literal(lit[None]),
            comma=self.sep(","), colon=self.sep(":"), lbrace=self.open("{"), rbrace=self.close("}"),
            lbrack=self.open("["), rbrack=self.close("]"), string=self._base_terms[0], number=self._base_terms[1])

    # -- nodes ----------------------------------------------------------------------------------------------
    def expr(self, node: Node) -> str:
        key = id(node)
        if key in self._memo:
            return self._memo[key]
        if isinstance(node, RefNode):
            name = self.fresh("def_" + node.name)
            self._memo[key] = name  # before the body: recursion refers back to this name
            target = node.target
            if isinstance(target, (ObjectNode, ArrayNode, UnionNode)):
                self._memo[id(target)] = name
                self.rules[name] = self._body(target)
            else:
                self.rules[name] = self.expr(target)
            return name
        out = self._expr(node)
        self._memo[key] = out
        return out

    def _expr(self, node: Node) -> str:
        if isinstance(node, AnyNode):
            return self.ensure_base()
        if isinstance(node, NeverNode):
            return self.terminal("never", _NEVER_REGEX)
        if isinstance(node, ConstNode):
            lits = [lark_literal(self.d.dump(v)) for v in node.values]
            if len(lits) == 1:
                return lits[0]
            return self.rule(node.hint, " | ".join(lits))
        if isinstance(node, ScalarNode):
            return self.terminal(node.hint, node.regex)
        if isinstance(node, (UnionNode, ObjectNode, ArrayNode)):
            return self.rule(node.hint, self._body(node))
        raise TypeError(f"unknown IR node {node!r}")

    def _body(self, node: Node) -> str:
        if isinstance(node, UnionNode):
            return " | ".join(self.expr(o) for o in node.options)
        if isinstance(node, ObjectNode):
            return self.object_body(node)
        return self.array_body(node)

    def object_body(self, node: ObjectNode, *, kwargs: bool = False) -> str:
        """Members in schema order; optional ones may be skipped. Every alternative starts with the first
        member actually written, so a comma is never left dangling. What may follow member j is a chain of
        small `<object>_after_<key>` rules: lark expands each `(...)?` of a rule into copies of the whole
        rule, so many optional members in one rule would grow exponentially."""
        comma = self.sep(",")
        kvs = [f"{self.key(p.key, kwargs)} {self.expr(p.node)}" for p in node.props]
        extra_kv = None
        if node.extra is not None:
            if kwargs:
                key_term = self.terminal("kwarg_name", _PY_KWARG.pattern)
                extra_kv = f"{key_term} \"=\" {self.expr(node.extra)}"
            else:
                # patternProperties keys: pattern_regex already matches the key's JSON string text.
                key_term = self.terminal("key" if node.extra_key_regex else "string",
                                         node.extra_key_regex or rx.string_regex())
                extra_kv = f"{key_term} {self.sep(':')} {self.expr(node.extra)}"
        n = len(node.props)
        tails: dict[int, str] = {}

        def tail(j: int) -> str:  # what may follow once member j-1 (or an earlier one) was written
            if j == n:
                return f"({comma} {extra_kv})*" if extra_kv else ""
            if j in tails:
                return tails[j]
            p, rest = node.props[j], tail(j + 1)
            if p.required:
                out = f"{comma} {kvs[j]} {rest}".strip()
            else:
                body = f"({comma} {kvs[j]})? {rest}".strip()
                out = self.rule(f"{node.hint}_after_{node.props[j - 1].key if j else 'open'}", body)
            tails[j] = out
            return out

        alts = []
        empty_ok = True
        for j in range(n):
            alts.append(f"{kvs[j]} {tail(j + 1)}".strip())
            if node.props[j].required:
                empty_ok = False
                break
        if empty_ok and extra_kv:
            alts.append(f"{extra_kv} ({comma} {extra_kv})*")
        if kwargs:
            lo, hi = "", ""
        else:
            lo, hi = self.open("{"), self.close("}")
        if not alts:
            inner = ""
        elif len(alts) == 1:
            inner = alts[0] if not empty_ok else f"({alts[0]})?"
        else:
            inner = "(" + " | ".join(alts) + ")" + ("?" if empty_ok else "")
        if not kwargs and not self.d.flexible and not inner:
            return lark_literal("{}")
        return " ".join(x for x in (lo, inner, hi) if x) or '""'

    def array_body(self, node: ArrayNode) -> str:
        comma = self.sep(",")
        k, lo, hi = len(node.prefix), node.min_items, node.max_items

        def elem(i: int) -> str:
            return self.expr(node.prefix[i] if i < k else node.rest)

        def after(i: int) -> str:  # elements at positions >= i, given position i-1 was written
            if hi is not None and i >= hi:
                return ""
            if i < k:
                inner = f"{comma} {elem(i)} {after(i + 1)}".strip()
                return inner if i < lo else f"({inner})?"
            if node.rest is None:
                return ""
            a = max(lo - i, 0)
            b = None if hi is None else hi - i
            rep = f"({comma} {elem(i)})"
            if b is None:
                return (f"{rep}~{a} " if a else "") + f"{rep}*"
            return f"{rep}~{a}" if a == b else f"{rep}~{a}..{b}"

        lb, rb = self.open("["), self.close("]")
        if (hi == 0) or (k == 0 and node.rest is None):
            return lark_literal("[]") if not self.d.flexible else f"{lb} {rb}"
        first = f"{elem(0)} {after(1)}".strip()
        return f"{lb} {first} {rb}" if lo > 0 else f"{lb} ({first})? {rb}"

    # -- output ---------------------------------------------------------------------------------------------
    def text(self, head: str = "") -> str:
        parts = [head.rstrip("\n")] if head else []
        for name, body in self.rules.items():
            parts.append(f"{name}: {body}")
        base = self.base_text()
        if base:
            parts.append(base.rstrip("\n"))
        for name, regex in self.terminals.items():
            parts.append(f"{name}: {lark_regex(regex)}")
        if self.d.flexible:
            parts.append(f"WS: {lark_regex(_FLEX_WS)}")
        return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------- renderer
class Renderer:
    """Canonical text of a value under an IR node: the exact text the grammar's canonical form accepts.
    Raises ValueError when the value does not fit the node's shape (so render doubles as a structural check)."""

    def __init__(self, dialect: Dialect):
        self.d = dialect

    def render(self, node: Node, value: Any, *, kwargs: bool = False) -> str:
        try:
            return self._r(node, value, kwargs)
        except _NoFit as e:
            raise ValueError(f"value does not fit the schema: {e}") from None

    def _r(self, node: Node, value: Any, kwargs: bool = False) -> str:
        if isinstance(node, RefNode):
            return self._r(node.target, value)
        if isinstance(node, AnyNode):
            try:
                return self.d.dump(value)
            except ValueError as e:
                raise _NoFit(str(e)) from None
        if isinstance(node, NeverNode):
            raise _NoFit("no value is allowed here")
        if isinstance(node, ConstNode):
            for member in node.values:
                if _json_equal(member, value):
                    return self.d.dump(member)
            raise _NoFit(f"{value!r} is not one of {node.values!r}")
        if isinstance(node, ScalarNode):
            text = self._scalar(node, value)
            if not re.fullmatch(node.regex, text):
                raise _NoFit(f"{text} does not match the {node.kind} constraints")
            return text
        if isinstance(node, UnionNode):
            errors = []
            for option in node.options:
                try:
                    return self._r(option, value)
                except _NoFit as e:
                    errors.append(str(e))
            raise _NoFit("no alternative fits: " + "; ".join(errors[:3]))
        if isinstance(node, ObjectNode):
            return self._object(node, value, kwargs)
        if isinstance(node, ArrayNode):
            return self._array(node, value)
        raise TypeError(f"unknown IR node {node!r}")

    def _scalar(self, node: ScalarNode, value: Any) -> str:
        if node.kind == "string":
            if not isinstance(value, str):
                raise _NoFit(f"{value!r} is not a string")
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _NoFit(f"{value!r} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise _NoFit(f"{value!r} is not a JSON number")
        if node.kind == "integer":
            if isinstance(value, float):
                if not value.is_integer():
                    raise _NoFit(f"{value!r} is not an integer")
                value = int(value)
        return json.dumps(value)

    def _object(self, node: ObjectNode, value: Any, kwargs: bool) -> str:
        if not isinstance(value, dict):
            raise _NoFit(f"{type(value).__name__} is not an object")
        parts = []
        declared = set()
        for p in node.props:
            declared.add(p.key)
            if p.key in value:
                key = f"{p.key}=" if kwargs else json.dumps(p.key, ensure_ascii=False) + ": "
                parts.append(key + self._r(p.node, value[p.key]))
            elif p.required:
                raise _NoFit(f"missing required property {p.key!r}")
        for k, v in value.items():
            if k in declared:
                continue
            if node.extra is None:
                raise _NoFit(f"undeclared property {k!r}")
            if kwargs:
                if not _PY_KWARG.fullmatch(k):
                    raise _NoFit(f"{k!r} is not a Python keyword-argument name")
                parts.append(f"{k}={self._r(node.extra, v)}")
            else:
                key = json.dumps(k, ensure_ascii=False)
                if node.extra_key_regex and not re.fullmatch(node.extra_key_regex, key):
                    raise _NoFit(f"property name {k!r} matches no allowed pattern")
                parts.append(f"{key}: {self._r(node.extra, v)}")
        body = ", ".join(parts)
        return body if kwargs else "{" + body + "}"

    def _array(self, node: ArrayNode, value: Any) -> str:
        if not isinstance(value, (list, tuple)):
            raise _NoFit(f"{type(value).__name__} is not an array")
        n = len(value)
        if n < node.min_items or (node.max_items is not None and n > node.max_items):
            raise _NoFit(f"{n} items is outside [{node.min_items}, {node.max_items}]")
        if node.rest is None and n > len(node.prefix):
            raise _NoFit(f"at most {len(node.prefix)} items are allowed")
        items = [self._r(node.prefix[i] if i < len(node.prefix) else node.rest, v) for i, v in enumerate(value)]
        return "[" + ", ".join(items) + "]"


# ---------------------------------------------------------------------------------------------- Grammar
_UNQUOTED_TERMINAL = re.compile(r"^([A-Z][A-Z0-9_]*): /([^\"].*)/$", re.M)
_TERMINAL_LINE = re.compile(r"^[A-Z][A-Z0-9_]*: /.*/$", re.M)
_BACKSLASHES_QUOTE = re.compile(r'(?<!\\)((?:\\\\)+)"')


@functools.lru_cache(maxsize=128)
def lark_parser(text: str) -> lark.Lark:
    """The Python-side parser of a grammar text. lark's Earley lexer keeps the first match a terminal's regex
    finds, not the longest (llguidance's lexer takes the longest), so an integer range such as
    `[1-9][0-9]?|1[0-1][0-9]` would stop at "11" in "119". Numeric (unquoted) terminals therefore get a
    trailing look-ahead here, which makes `re` backtrack into the longer alternative. Quoted terminals end
    at their closing quote, which already fixes their length."""
    def longest(m):
        numeric = "[0-9]" in m[2] or "[1-9]" in m[2]
        return f"{m[1]}: /(?:{m[2]})(?![0-9.eE+-])/" if numeric else m[0]
    text = _UNQUOTED_TERMINAL.sub(longest, text)
    # lark's regex-literal unescaping turns an escaped backslash followed by a quote (\\") into an escaped
    # quote, dropping the backslash; spelling that quote \x22 keeps the regex's meaning.
    text = _TERMINAL_LINE.sub(lambda m: _BACKSLASHES_QUOTE.sub(r"\1\\x22", m[0]), text)
    return lark.Lark(text, start="start", parser="earley", lexer="dynamic", propagate_positions=True)


class Grammar:
    """A compiled JSON Schema: `.lark` (the grammar text), `.accepts(text)`, `.render(value)` (canonical text)
    and `.accepts_value(value)` (render, then accept). `.relaxations` lists what lenient mode relaxed."""

    def __init__(self, lark_text: str, node: Node, dialect: Dialect, relaxations: list[Relaxation]):
        self.lark = lark_text
        self.node = node
        self.dialect = dialect
        self.relaxations = relaxations

    def accepts(self, text: str) -> bool:
        return in_language(self.lark, text)

    def render(self, value: Any) -> str:
        return Renderer(self.dialect).render(self.node, value)

    def accepts_value(self, value: Any) -> bool:
        try:
            text = self.render(value)
        except ValueError:
            return False
        return self.accepts(text)

    def __repr__(self) -> str:
        return f"Grammar({len(self.lark.splitlines())} lines, {len(self.relaxations)} relaxations)"


def warn_relaxed(relaxations: list[Relaxation], what: str) -> None:
    if relaxations:
        shown = "; ".join(str(r) for r in relaxations[:5])
        more = f" (+{len(relaxations) - 5} more)" if len(relaxations) > 5 else ""
        warnings.warn(f"{what}: relaxed in the grammar, checked by jsonschema after parsing: {shown}{more}",
                      RelaxedSchemaWarning, stacklevel=3)


def check_grammar(text: str, *, tool: str | None = None, path=()) -> None:
    """Every grammar the compiler returns has passed llguidance's own check (about a millisecond): an emitter
    bug must fail here, naming the schema, not later as a matcher that rejects every value."""
    import llguidance
    problem = llguidance.LLMatcher.validate_grammar(text)
    if problem:
        first = problem.strip().splitlines()[0][:200]
        raise ToolSchemaError(f"the compiled grammar is invalid ({first}); this is a compiler bug, please "
                              "report it with the schema", tool=tool, path=path)


def compile_schema(schema: Any, *, strict: bool = False, whitespace: str = "canonical",
                   assert_formats: bool = False, registry=None, warn: bool = True) -> Grammar:
    """Compile a JSON Schema (draft 2020-12) into a `Grammar` whose language is the canonical JSON text of
    the schema's valid values. It follows JSON Schema itself: objects stay open unless the schema closes them,
    and `format` is an annotation unless `assert_formats=True` (then date, time, date-time, email, uuid, uri,
    ipv4, ipv6 and hostname are enforced). `registry` (a `referencing.Registry`) supplies remote `$ref`s."""
    check_schema(schema)
    dialect = Dialect("json", whitespace)
    builder = IRBuilder(schema, Policy(strict=strict, assert_formats=assert_formats), registry=registry)
    node = builder.build("value")
    emitter = LarkEmitter(dialect)
    top = emitter.expr(node)
    text = emitter.text(f"start: {top}")
    check_grammar(text)
    if warn:
        warn_relaxed(builder.relaxations, "schema")
    return Grammar(text, node, dialect, builder.relaxations)
