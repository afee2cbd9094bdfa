"""Errors that name the offending tool, JSON path and keyword, so bad input never surfaces as a traceback
from deep inside a dependency."""
from __future__ import annotations


def format_path(path) -> str:
    """JSON-pointer-like display of a path given as a sequence of keys and indices."""
    parts = [str(p) for p in path]
    return "/".join(parts) if parts else "(root)"


class ConstrainedFCError(ValueError):
    """Base class of every error constrained_fc raises on bad input."""


class ToolSchemaError(ConstrainedFCError):
    """A tool definition or one of its JSON Schemas is unusable.

    `tool` is the tool's name (or its index when the name itself is the problem), `path` the location inside
    the tool definition, `keyword` the JSON Schema keyword at fault (None when no single keyword is).
    """

    def __init__(self, message: str, *, tool: str | None = None, path=(), keyword: str | None = None):
        self.tool = tool
        self.path = tuple(path)
        self.keyword = keyword
        self.reason = message
        where = []
        if tool is not None:
            where.append(f"tool {tool!r}")
        where.append(f"at {format_path(self.path)}")
        if keyword is not None:
            where.append(f"keyword {keyword!r}")
        super().__init__(f"{', '.join(where)}: {message}")


class UnsupportedKeywordError(ToolSchemaError):
    """Strict mode only: the grammar cannot express this keyword exactly."""


class GrammarMismatchError(ConstrainedFCError):
    """Text handed to `parse` is not in the grammar's language."""


class ContextLengthError(ConstrainedFCError):
    """The prompt does not fit the model's context window; nothing was generated."""

    def __init__(self, prompt_tokens: int, context: int):
        self.prompt_tokens = prompt_tokens
        self.context = context
        super().__init__(f"the prompt is {prompt_tokens} tokens but the model's context is {context} tokens: "
                         "shorten the conversation or send fewer tools")
