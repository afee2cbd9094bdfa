"""The call formats, one object each: everything about how a list of tool calls is written.

    MISTRAL   [TOOL_CALLS][{"name": "f", "arguments": {...}}, {...}]
    HERMES    <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>\\n<tool_call>\\n{...}\\n</tool_call>
    PYTHON    [f(a=1), g(b="x")]

A list is `trigger + list_open + call (separator call)* + list_close`, each call wrapped in `call_open ... call_close`
and spelled in the format's dialect (a JSON `{"name", "arguments"}` object, or a Python call with keyword
arguments). From these pieces the compiler fills in the format's Lark template (`grammars/<name>.lark`), the
call scanner finds calls as they stream, `read` turns accepted text back into (name, arguments), `render`
writes calls, and `detects` recognises a tokenizer's chat template that writes this format.

Adding a format is one `CallFormat` passed to `register_format` plus its template; see `tests/test_formats.py`,
which adds a toy one. The envelope pieces may not contain brackets other than those of `list_open` and
`list_close` (the scanner counts brackets outside strings to find where a call ends).
"""
from __future__ import annotations

import ast
import json
import keyword
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..errors import ConstrainedFCError

_JSON = json.JSONDecoder()
_WS = " \t\n\r"


@dataclass(frozen=True)
class CallFormat:
    """One call format.

    name: what `Options(format=...)`, `compile_tools(format=...)` and `--format` take.
    trigger: the text that opens a call list (one special token in a tokenizer prepared for it), or "" when
        the whole reply is the list (the call is then `required` or named: `auto` cannot tell when it starts).
    dialect: "json" (`{"name": ..., "arguments": {...}}`) or "python" (`name(key=value, ...)`).
    list_open / separator / list_close: the canonical text before the first call, between calls and after the
        last. call_open / call_close: around every call.
    template: the Lark text of the envelope. It may use $trigger, $call_alternatives (one alternative per tool),
        $more_calls (further calls, bounded by max_calls), $lbrack / $rbrack (a bracket, with the whitespace
        mode's spaces) and $ws (optional whitespace in the flexible mode, else nothing).
    next_call: the Lark expression of one further call (what $more_calls repeats); may use $comma.
    template_marker: text whose presence in a tokenizer's chat template means the template writes this
        format (None: never detected).
    vllm_parser / sglang_parser: the serving engine's `--tool-call-parser` that reads this format back into
        `tool_calls` (None: it has none), used by `export_grammar`."""

    name: str
    trigger: str
    dialect: str
    template: str
    next_call: str
    list_open: str = "["
    separator: str = ", "
    list_close: str = "]"
    call_open: str = ""
    call_close: str = ""
    template_marker: str | None = None
    vllm_parser: str | None = None
    sglang_parser: str | None = None

    def __post_init__(self):
        if self.dialect not in ("json", "python"):
            raise ConstrainedFCError(f"call format {self.name!r}: dialect must be 'json' or 'python', "
                                     f"got {self.dialect!r}")

    # -- the scanner's view ----------------------------------------------------------------------------------
    @property
    def call_depth(self) -> int:
        """Bracket depth of a call's first character (the brackets `list_open` opens)."""
        return sum(self.list_open.count(b) for b in "[({")

    def starts_call(self, ch: str) -> bool:
        """Whether `ch`, at the call depth and outside strings, begins a call."""
        return ch == "{" if self.dialect == "json" else (ch.isalnum() or ch in "_.-")

    # -- text <-> calls ----------------------------------------------------------------------------------------
    def render(self, call_texts: list[str]) -> str:
        """The full text of a list of calls, each already spelled in the dialect."""
        calls = [self.call_open + c + self.call_close for c in call_texts]
        return self.trigger + self.list_open + self.separator.join(calls) + self.list_close

    def read(self, body: str, *, ast_names: bool = True) -> list[tuple[str, dict]]:
        """(name, arguments) of each call in `body`, the text after the trigger, which the grammar accepted (or
        which is about to be rejected: this raises ValueError / SyntaxError / KeyError / TypeError on text
        that is not a complete list). It reads, it does not judge: the grammar (llguidance) decided what is in
        the language, so whitespace around the envelope is passed over. ast_names: every tool name is one
        Python reads as a name (`math.factorial`), so a list-shaped python body is one `ast.parse`."""
        if self.dialect == "json":
            return self._read_json(body)
        return self._read_python(body, ast_names)

    def _expect(self, body: str, pos: int, piece: str) -> int:
        piece = piece.strip(_WS)
        while pos < len(body) and body[pos] in _WS:
            pos += 1
        if not body.startswith(piece, pos):
            raise ValueError(f"expected {piece!r} at character {pos}")
        return pos + len(piece)

    def _at_end(self, body: str, pos: int) -> bool:
        # Nothing may follow the close; a list without one (hermes) ends right after its last call, since text
        # after it (even a newline) is the start of a further call, i.e. a list cut short.
        close = self.list_close.strip(_WS)
        rest = body[pos:]
        return rest.lstrip(_WS) == close if close else rest == ""

    def _read_json(self, body: str) -> list[tuple[str, dict]]:
        calls, pos = [], self._expect(body, 0, self.list_open)
        while True:
            if calls:
                pos = self._expect(body, pos, self.separator)
            pos = self._expect(body, pos, self.call_open)
            while pos < len(body) and body[pos] in _WS:
                pos += 1
            call, pos = _JSON.raw_decode(body, pos)  # C speed: a long arguments object is not walked in Python
            calls.append((call["name"], call["arguments"]))
            pos = self._expect(body, pos, self.call_close)
            if self._at_end(body, pos):
                return calls

    def _read_python(self, body: str, ast_names: bool) -> list[tuple[str, dict]]:
        listed = (self.list_open, self.separator.strip(_WS), self.list_close, self.call_open, self.call_close) == \
            ("[", ",", "]", "", "")
        if ast_names and listed:
            tree = ast.parse(body.strip(_WS), mode="eval").body
            if not isinstance(tree, ast.List):
                raise ValueError("the calls are not a list")
            return [(ast.unparse(c.func), _kwargs(c)) for c in tree.elts]
        from .call_scanner import CallScanner
        scanner = CallScanner(self)
        scanner.feed(body.strip(_WS))
        if not scanner.closed or not scanner.calls or not scanner.calls[-1].complete:
            raise ValueError("the call list is not closed")
        out = []
        for span in scanner.calls:
            call = ast.parse(f"f({scanner.arguments_text(span)})", mode="eval").body
            out.append((scanner.name(span), _kwargs(call)))
        return out

    def detects(self, chat_template: str | None) -> bool:
        return bool(chat_template) and self.template_marker is not None and self.template_marker in chat_template


def _kwargs(call: ast.Call) -> dict:
    # One literal_eval over all the values: its per-call set-up costs more than reading a small literal.
    values = ast.literal_eval(ast.List([kw.value for kw in call.keywords], ast.Load()))
    return {kw.arg: _lists(v) for kw, v in zip(call.keywords, values)}


def _lists(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def is_python_name(name: str) -> bool:
    """A dotted name Python reads as one (`math.factorial`, not `get-weather`)."""
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split("."))


def _template(name: str) -> str:
    return resources.files("constrained_fc.compiler.grammars").joinpath(name).read_text("utf-8")


# -- the registry ----------------------------------------------------------------------------------------------
FORMATS: dict[str, CallFormat] = {}
DEFAULT_FORMAT = "mistral"  # ours: the shipped adapter is trained on it


def register_format(fmt: CallFormat, *, replace: bool = False) -> CallFormat:
    if not isinstance(fmt, CallFormat):
        raise ConstrainedFCError(f"register_format takes a CallFormat, got {type(fmt).__name__}")
    if fmt.name in FORMATS and not replace:
        raise ConstrainedFCError(f"a call format named {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    FORMATS.pop(name, None)


def get_format(fmt: "str | CallFormat") -> CallFormat:
    if isinstance(fmt, CallFormat):
        return fmt
    found = FORMATS.get(fmt)
    if found is None:
        raise ConstrainedFCError(f"unknown format {fmt!r}; expected one of {tuple(FORMATS)}")
    return found


def detect_format(chat_template: str | None) -> CallFormat | None:
    """The registered format a tokenizer's chat template writes, if one of them says so."""
    return next((f for f in FORMATS.values() if f.detects(chat_template)), None)


MISTRAL = register_format(CallFormat(
    "mistral", trigger="[TOOL_CALLS]", dialect="json", template=_template("mistral.lark"),
    next_call="$comma tool_call", template_marker="[TOOL_CALLS]", vllm_parser="mistral", sglang_parser="mistral"))
HERMES = register_format(CallFormat(
    "hermes", trigger="<tool_call>", dialect="json", template=_template("hermes.lark"),
    next_call='"\\n<tool_call>\\n" tool_call "\\n</tool_call>"',
    list_open="", separator="\n<tool_call>", list_close="", call_open="\n", call_close="\n</tool_call>",
    template_marker="<tool_call>", vllm_parser="hermes", sglang_parser="qwen25"))
PYTHON = register_format(CallFormat(
    "python", trigger="", dialect="python", template=_template("python.lark"), next_call="$comma tool_call",
    vllm_parser="pythonic", sglang_parser="pythonic"))
