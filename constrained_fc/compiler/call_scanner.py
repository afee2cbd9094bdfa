"""An incremental, string-aware scan of call-list text as it is generated: where each call starts and ends,
its name, and its argument text so far. The decoding loop uses it to stream OpenAI-style deltas and to spot
a call identical to an earlier one the moment it completes. The grammar has already guaranteed the syntax;
this only tracks brackets outside strings."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from .formats import CallFormat, get_format

_OPEN = {"{": "}", "[": "]", "(": ")"}
_NAME_RE = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_OPEN_NAME_RE = re.compile(r'\{\s*"name"\s*:\s*"([^"\\]*)\Z')


def closing_bracket(text: str, start: int, quotes: str = '"') -> int | None:
    """Index of the bracket closing the one at `text[start]`, or None while it is open. Brackets of other kinds
    do not count, nor does anything inside a string opened by one of `quotes` (backslash escapes honoured):
    for reading one bracketed piece out of text that need not be well formed."""
    opener, i = text[start], start
    closer = _OPEN[opener]
    depth, quote = 0, None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in quotes:
            quote = ch
        elif ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


@dataclass
class CallSpan:
    start: int
    end: int | None = None  # one past the call's last character, once complete

    @property
    def complete(self) -> bool:
        return self.end is not None


class CallScanner:
    """Feed it the text after the trigger, growing; read `.calls`. `format`: a `CallFormat` or a registered
    format's name (mistral `[{...}, {...}]`, hermes `\\n{...}\\n</tool_call>` blocks, python `[f(a=1), g(b=2)]`)."""

    def __init__(self, format: "str | CallFormat"):
        self.call_format = get_format(format)
        self.python = self.call_format.dialect == "python"
        self.call_depth = self.call_format.call_depth
        self.text = ""
        self.calls: list[CallSpan] = []
        self._pos = 0
        self._depth = 0
        self._in_str = False
        self._esc = False
        self._checked = 0

    def feed(self, text: str) -> None:
        if not text.startswith(self.text[:self._pos]):
            # The text changed under us (a rollback): rescan from scratch.
            self.__init__(self.call_format)
        self.text = text
        for i in range(self._pos, len(text)):
            ch = text[i]
            if self._in_str:
                if self._esc:
                    self._esc = False
                elif ch == "\\":
                    self._esc = True
                elif ch == '"':
                    self._in_str = False
                continue
            if ch == '"':
                self._in_str = True
                continue
            starts_call = self._depth == self.call_depth and self.call_format.starts_call(ch)
            if starts_call and (not self.calls or self.calls[-1].complete):
                self.calls.append(CallSpan(i))
            if ch in _OPEN:
                self._depth += 1
            elif ch in "}])":
                self._depth -= 1
                if self._depth == self.call_depth and self.calls and not self.calls[-1].complete:
                    self.calls[-1].end = i + 1
        self._pos = len(text)

    @property
    def closed(self) -> bool:
        """Every bracket the text opened is closed again (for mistral and python: the call list is complete)."""
        return self._pos > 0 and self._depth == 0 and not self._in_str

    @property
    def between_calls(self) -> bool:
        """The text ends after a complete call, outside any string and open bracket of a next one: where a
        list may be closed."""
        return (bool(self.calls) and self.calls[-1].complete and self._depth == self.call_depth
                and not self._in_str)

    def open_name(self) -> str | None:
        """While the text ends inside the name of the call being written, the name's characters so far ("" right
        where it begins); None anywhere else. (A Python call begins with its name, so there it is "" wherever a
        next call may begin.)"""
        if self.calls and not self.calls[-1].complete:
            text = self.call_text(self.calls[-1])
            if self.python:
                return text if "(" not in text else None
            m = _OPEN_NAME_RE.match(text)
            return m.group(1) if m else None
        if self.python and self._depth == self.call_depth and not self._in_str:
            tail = self.text[self.calls[-1].end:] if self.calls else self.text
            if tail.rstrip().endswith(("[", ",")):
                return ""
        return None

    def call_text(self, span: CallSpan) -> str:
        return self.text[span.start:span.end if span.end is not None else len(self.text)]

    def name(self, span: CallSpan) -> str | None:
        text = self.call_text(span)
        if self.python:
            i = text.find("(")
            return text[:i] if i > 0 else None
        m = _NAME_RE.match(text)
        return json.loads(f'"{m.group(1)}"') if m else None

    def arguments_text(self, span: CallSpan) -> str:
        """The argument text written so far (JSON object text, or Python keyword arguments)."""
        text = self.call_text(span)
        if self.python:
            i = text.find("(")
            if i < 0:
                return ""
            body = text[i + 1:]
            return body[:-1] if span.complete else body
        m = _NAME_RE.match(text)
        if not m:
            return ""
        body = text[m.end():]
        return body[:-1].rstrip() if span.complete else body

    def key(self, span: CallSpan):
        """A comparable identity of a complete call: (name, canonical arguments)."""
        name = self.name(span)
        args = self.arguments_text(span)
        try:
            if self.python:
                value = {kw.arg: ast.literal_eval(kw.value)
                         for kw in ast.parse(f"f({args})", mode="eval").body.keywords}
            else:
                value = json.loads(args)
        except (ValueError, SyntaxError):
            return (name, args)
        return (name, json.dumps(value, sort_keys=True))

    def new_duplicate(self) -> int | None:
        """Index of a call completed since the last look that is identical to an earlier one in this turn
        (the scanner may already be inside the next call when a token closes one call and opens another)."""
        done = [c for c in self.calls if c.complete]
        fresh = range(self._checked, len(done))
        self._checked = len(done)
        keys = [self.key(c) for c in done]
        for i in fresh:
            if keys[i] in keys[:i]:
                return i
        return None
