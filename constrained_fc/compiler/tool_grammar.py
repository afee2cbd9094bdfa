"""Stage 3: a tools list -> one Lark grammar for the call envelope of a call format (`formats`: mistral, hermes,
python, or one you register), with parse (text -> validated `ToolCall`s) and render (calls -> canonical text)."""
from __future__ import annotations

import hashlib
import json
import keyword
import string
from typing import Any, Iterable, Sequence

import jsonschema

from ..errors import ConstrainedFCError, GrammarMismatchError, ToolSchemaError
from .formats import DEFAULT_FORMAT, CallFormat, get_format, is_python_name
from .language import in_language, mismatch
from .schema_compiler import (Dialect, LarkEmitter, check_grammar, Renderer, lark_literal, rule_name,
                              warn_relaxed, _PY_IDENT)
from .schema_ir import IRBuilder, NeverNode, ObjectNode, Policy, Relaxation
from .tools import Tool, ToolCall, normalize_tools, schema_validator

TOOL_CHOICES = ("auto", "required", "none")


def tool_choice_name(tool_choice: Any) -> str | None:
    """The forced function's name for a named tool_choice (OpenAI's {"type": "function", "function": {...}}
    or a bare name), else None."""
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function", tool_choice)
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise ConstrainedFCError(f"tool_choice {tool_choice!r} names no function")
        return name
    if isinstance(tool_choice, str) and tool_choice not in TOOL_CHOICES:
        return tool_choice
    if tool_choice is None or tool_choice in TOOL_CHOICES:
        return None
    raise ConstrainedFCError(f"tool_choice must be one of {TOOL_CHOICES} or a function, got {tool_choice!r}")


class ToolGrammar:
    """The compiled grammar of a tools list in one call format.

    `.lark` is the full grammar (trigger included); `.body_lark` the same grammar from just after the trigger,
    which is what the token matcher runs once the trigger has been seen. `.accepts(text)`, `.parse(text)` and
    `.render(calls)` all work on the full text."""

    def __init__(self, tools: list[Tool], fmt: CallFormat, lark_text: str, body_lark: str,
                 args_nodes: dict, call_rules: dict, dialect: Dialect, relaxations: list[Relaxation]):
        self.tools = tools
        self.call_format = fmt
        self.format = fmt.name
        self.trigger = fmt.trigger
        self.lark = lark_text
        self.body_lark = body_lark
        self.dialect = dialect
        self.relaxations = relaxations
        self._args_nodes = args_nodes
        self._call_rules = call_rules  # rule name -> tool name
        self._tools = {t.name: t for t in tools}
        self._validators: dict = {}
        # Calls whose names Python itself reads as a name (`math.factorial`) are read from one `ast.parse`
        # of the list; a name such as `get-weather` is not, so those lists are split by the call scanner.
        self._py_names = all(is_python_name(n) for n in call_rules.values())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.lark.encode("utf-8")).hexdigest()

    @property
    def tool_names(self) -> list[str]:
        return list(self._args_nodes)

    def accepts(self, text: str) -> bool:
        return in_language(self.lark, text)

    def parse(self, text: str, *, validate: bool = True, trusted: bool = False) -> list[ToolCall]:
        """Text the grammar accepts -> `ToolCall`s, each checked with jsonschema against its tool (a failing
        call carries `.error` and is not `.valid`). Text the grammar rejects raises GrammarMismatchError.

        This reads the grammar's language: the canonical text the model is held to (integers without a
        fraction, the declared property order, ...). JSON Schema accepts more (`1.0` is an integer); to judge
        text that did not come through the grammar by the schema alone, `check(ToolCall(name, arguments))`.

        trusted=True is for text the token matcher produced (llguidance accepted it token by token): it is
        then only read, with json / ast, not checked against the grammar again. A text cut short (generation
        stopped mid-call) still raises GrammarMismatchError."""
        if not trusted:
            problem = mismatch(self.lark, text)
            if problem is not None:
                raise GrammarMismatchError(f"not a valid {self.format} tool call for these tools in the grammar's "
                                           f"canonical form (check() judges by the schema alone): {problem}")
        calls = [ToolCall(name=name, arguments=args) for name, args in self._read(text)]
        if validate:
            for call in calls:
                call.error = self.check(call)
        return calls

    def _read(self, text: str) -> list[tuple[str, dict]]:
        """(name, arguments) of each call in a text of this grammar's language (or a prefix of one, which
        raises). The envelope is matched exactly; the calls themselves are read by json or ast."""
        try:
            if not text.startswith(self.trigger):
                raise ValueError(f"the text does not start with {self.trigger!r}")
            return self.call_format.read(text[len(self.trigger):], ast_names=self._py_names)
        except (ValueError, SyntaxError, TypeError, KeyError, AttributeError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise GrammarMismatchError(f"not a complete {self.format} call list: {first}") from None

    def check(self, call: ToolCall | tuple) -> str | None:
        """jsonschema's verdict on one call: None if valid, else a one-line reason naming the path."""
        name, args = (call.name, call.arguments) if isinstance(call, ToolCall) else call
        tool = self._tools.get(name)
        if tool is None:
            return f"unknown function {name!r}"
        validator = self._validators.get(name)
        if validator is None:  # kept per tool: serialising a large schema for the shared cache's key is not free
            validator = self._validators[name] = schema_validator(json.dumps(tool.parameters))
        if validator.is_valid(args):  # the common case, without building errors to rank
            return None
        err = jsonschema.exceptions.best_match(validator.iter_errors(args))
        where = "/".join(str(p) for p in err.absolute_path) or "(arguments)"
        return f"{name}: {where}: {err.message} (keyword {err.validator!r})"

    def render(self, calls: Iterable[ToolCall | tuple]) -> str:
        """Canonical text of a list of calls, trigger included, so `accepts(render(calls))` for valid calls."""
        r = Renderer(self.dialect)
        parts = []
        for call in calls:
            name, args = (call.name, call.arguments) if isinstance(call, ToolCall) else call
            if name not in self._args_nodes:
                raise ConstrainedFCError(f"cannot render a call to {name!r}: not among this grammar's tools")
            node = self._args_nodes[name]
            if self.dialect.name == "python":
                parts.append(f"{name}({r.render(node, args, kwargs=True)})")
            else:
                parts.append(f'{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {r.render(node, args)}}}')
        if not parts:
            raise ConstrainedFCError("cannot render an empty list of calls")
        return self.call_format.render(parts)

    def __repr__(self) -> str:
        return f"ToolGrammar(format={self.format!r}, tools={len(self.tool_names)}, lines={len(self.lark.splitlines())})"


def compile_tools(tools: Sequence[Any], *, format: "str | CallFormat" = DEFAULT_FORMAT, parallel: bool = True,
                  tool_choice: Any = "auto", whitespace: str = "canonical", strict: bool = False,
                  max_calls: int | None = None, max_string_length: int | None = None,
                  max_array_items: int | None = None,
                  warn: bool = True) -> ToolGrammar:
    """Compile tools (OpenAI, Mistral/bare or BFCL dialect) into the call grammar of one chat format.

    parallel: several calls per turn (False: exactly one). tool_choice: "auto"/"required"/"none" give the same
    grammar (the runtime decides when it applies); a function name (or OpenAI's {"type": "function", ...})
    restricts it to that tool. max_calls bounds calls per turn. max_string_length bounds strings that declare
    no maxLength, max_array_items arrays that declare no maxItems. Tool arguments are closed objects: undeclared keys are rejected unless a schema says
    `additionalProperties`; string formats (date, email, uuid, ...) are enforced. strict=True raises on a keyword the grammar cannot express instead of relaxing it."""
    fmt = get_format(format)
    norm = normalize_tools(tools)
    forced = tool_choice_name(tool_choice)
    if forced is not None:
        if forced not in {t.name for t in norm}:
            raise ToolSchemaError(f"tool_choice names {forced!r}, which is not among the tools "
                                  f"({', '.join(t.name for t in norm) or 'none'})", tool=forced,
                                  keyword="tool_choice")
        selected = [t for t in norm if t.name == forced]
    else:
        selected = norm
    for name, bound in (("max_calls", max_calls), ("max_string_length", max_string_length),
                        ("max_array_items", max_array_items)):
        if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool) or bound < 1):
            raise ConstrainedFCError(f"{name} must be a positive integer or None, got {bound!r}")
    dialect = Dialect(fmt.dialect, whitespace)
    em = LarkEmitter(dialect)
    relaxations: list[Relaxation] = []
    args_nodes = {}
    call_rules = {}
    call_lines = []
    for tool in selected:
        hint = rule_name(tool.name)
        policy = Policy(strict=strict, closed_objects=True, max_string_length=max_string_length,
                        max_array_items=max_array_items,
                        assert_formats=True, tool=tool.name)
        builder = IRBuilder(tool.parameters, policy, path_prefix=("parameters",))
        node = builder.build(f"{hint}_args")
        relaxations.extend(Relaxation(f"{tool.name}: {r.path}", r.keyword, r.detail) for r in builder.relaxations)
        if isinstance(node, NeverNode):
            raise ToolSchemaError("the parameters schema accepts no value at all", tool=tool.name,
                                  path=("parameters",))
        if fmt.dialect == "python":
            if not isinstance(node, ObjectNode):
                raise ToolSchemaError(f"the {fmt.name} format needs plain object parameters", tool=tool.name,
                                      path=("parameters",), keyword="type")
            for p in node.props:
                if not _PY_IDENT.fullmatch(p.key) or keyword.iskeyword(p.key):
                    # `f(class=1)` is not Python: a keyword cannot be a keyword-argument name.
                    what = "a Python keyword" if keyword.iskeyword(p.key) else "not a Python identifier"
                    raise ToolSchemaError(f"property {p.key!r} is {what}, so the {fmt.name} format cannot "
                                          "pass it as a keyword argument (use a JSON format: mistral or hermes)",
                                          tool=tool.name, path=("parameters", "properties", p.key),
                                          keyword="properties")
            args = em.rule(f"{hint}_args", em.object_body(node, kwargs=True), name=em.fresh(f"{hint}_args"))
            body = f'{lark_literal(tool.name + "(")} {args} ")"'
        else:
            args = em.expr(node)
            if dialect.flexible:
                body = (f'{em.open("{")} "\\"name\\"" {em.sep(":")} {lark_literal(json.dumps(tool.name))} '
                        f'{em.sep(",")} "\\"arguments\\"" {em.sep(":")} {args} {em.close("}")}')
            else:
                head = '{"name": ' + json.dumps(tool.name) + ', "arguments": '
                body = f'{lark_literal(head)} {args} "}}"'
        call_rule = em.fresh(f"call_{hint}")
        em.rules[call_rule] = body
        call_rules[call_rule] = tool.name
        call_lines.append(call_rule)
        args_nodes[tool.name] = node

    head_vars = _envelope_vars(fmt, em, call_lines, parallel, max_calls)
    template = string.Template(fmt.template)
    try:
        head_full = template.substitute(trigger=lark_literal(fmt.trigger) if fmt.trigger else "", **head_vars)
        head_body = template.substitute(trigger="", **head_vars)
    except (KeyError, ValueError) as e:
        raise ConstrainedFCError(f"call format {fmt.name!r}: its template uses an unknown placeholder ({e}); "
                                 f"known: $trigger, {', '.join('$' + k for k in head_vars)}") from None
    if not call_lines:
        raise ToolSchemaError("no tools to call: the tools list is empty", keyword="tools")
    text = em.text(head_full)
    body_text = em.text(head_body)
    check_grammar(body_text)  # the grammar the matcher runs (the full one only adds the trigger literal)
    if warn:
        warn_relaxed(relaxations, "tools")
    return ToolGrammar(norm, fmt, text, body_text, args_nodes, call_rules, dialect, relaxations)


def _more(item: str, most: int | None) -> str:
    """Up to `most - 1` further repetitions of `item` (unbounded when most is None)."""
    if most == 1:
        return ""
    return f"({item})*" if most is None else f"({item})~0..{most - 1}"


def _envelope_vars(fmt: CallFormat, em: LarkEmitter, call_rules: list, parallel: bool,
                   max_calls: int | None) -> dict:
    """The placeholders every format template may use (see `CallFormat`)."""
    most = 1 if not parallel else max_calls
    more = _more(string.Template(fmt.next_call).substitute(comma=em.sep(",")), most)
    return dict(call_alternatives=" | ".join(call_rules), more_calls=f" {more}" if more else "",
                lbrack=em.open("["), rbrack=em.close("]"), ws="WS? " if em.d.flexible else "")
