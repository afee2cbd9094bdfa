"""The options that shape a call grammar, defined once: every decoding path (`generate`, the HF processor,
`run_agent`, the server, the CLI, the benchmarks) takes an `Options`, and the runtime caches grammars by it.

    opts = Options(max_calls=2, strict=True)
    generate(model, tok, messages, tools, options=opts)
    generate(model, tok, messages, tools, max_calls=2, strict=True)   # the same, as plain keywords

Plain keywords override the fields of `options` they name; a keyword left out keeps the options' value.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConstrainedFCError
from .formats import DEFAULT_FORMAT

# A tiny model under a grammar can repeat calls forever; these bound a turn (see README, "Calls that end").
DEFAULT_MAX_CALLS = 8
DEFAULT_MAX_STRING_LENGTH = 128
DEFAULT_MAX_ARRAY_ITEMS = 16


class _Unset:
    """A keyword the caller did not pass (None is a value: "no bound")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Options:
    """Frozen and hashable: the grammar cache key.

    format: the call envelope, a registered format's name ("mistral", "hermes", "python", see `formats`);
        None picks the one the tokenizer's chat template writes, else mistral. parallel: several calls per turn (False: exactly one). max_calls: calls per turn (None: no
        bound). max_string_length / max_array_items: bounds for strings without maxLength and arrays without
        maxItems, so a run-on value cannot eat the token budget (None: no bound). whitespace: "canonical"
        (the one spelling the adapter was trained on) or "flexible" (JSON whitespace allowed). strict: a
        keyword the grammar cannot express is an error instead of being relaxed (and checked by jsonschema).
    Values are checked where the grammar is compiled (`compile_tools`), with one message each."""

    format: str | None = None
    parallel: bool = True
    max_calls: int | None = DEFAULT_MAX_CALLS
    max_string_length: int | None = DEFAULT_MAX_STRING_LENGTH
    max_array_items: int | None = DEFAULT_MAX_ARRAY_ITEMS
    whitespace: str = "canonical"
    strict: bool = False

    def replace(self, **changes) -> "Options":
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls, options: "Options | None" = None, **given) -> "Options":
        """`options` (default: `Options()`) with every keyword in `given` that is not UNSET applied."""
        if options is not None and not isinstance(options, Options):
            raise ConstrainedFCError(f"options must be an Options, got {type(options).__name__}")
        changes = {k: v for k, v in given.items() if v is not UNSET}
        base = options or cls()
        return base.replace(**changes) if changes else base

    def compile_kwargs(self) -> dict:
        """The keywords of `compile_tools` these options stand for."""
        return {"format": self.format or DEFAULT_FORMAT, "parallel": self.parallel, "max_calls": self.max_calls,
                "max_string_length": self.max_string_length, "max_array_items": self.max_array_items,
                "whitespace": self.whitespace, "strict": self.strict}
