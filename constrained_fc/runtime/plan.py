"""What every decoding path needs to know once per request: the compiled grammar (cached by the tool
list's content and the `Options`), the trigger and end-of-sequence ids, and the tool_choice mode. A `Session`
per row (`session`) runs it; our own loop (`decoding`), the HF processor (`logits_processor`) and the server
all start here."""
from __future__ import annotations

import functools
import json
import weakref
from typing import Any

from ..compiler.formats import DEFAULT_FORMAT, get_format
from ..compiler.options import Options
from ..compiler.tool_grammar import TOOL_CHOICES, ToolGrammar, compile_tools, tool_choice_name
from ..errors import ConstrainedFCError
from .matcher import TokenMatcher


_TOKEN_TEXT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=64)
def _compile_cached(tools_json: str, options: Options, forced: str | None) -> ToolGrammar:
    return compile_tools(json.loads(tools_json), tool_choice=forced if forced else "auto", warn=False,
                         **options.compile_kwargs())


def _tools_json(tools) -> str:
    # Not sort_keys: property order is part of the grammar (arguments are written in schema order).
    return json.dumps([t.to_openai() if hasattr(t, "to_openai") else t for t in tools])


class CallPlan:
    """What every decoding path needs to know once per request: the compiled grammar, the trigger and
    end-of-sequence token ids, and the tool_choice mode."""

    def __init__(self, tokenizer, tools, *, tool_choice: Any = "auto", options: Options | None = None,
                 name_prior: dict | None = None, asks: int = 1):
        from ..chat import uses_native_tool_format
        self.tokenizer = tokenizer
        # {tool name: weighted relevance, <= 0} from retrieval (`retrieval.Offer`): steers the choice of a call's
        # name (`Session.constrain`); {} leaves the model's choice alone. `asks`: the request's separate asks,
        # how many different tools a call list should need (`session.BEYOND_ASKS_LOGITS`).
        self.name_prior = dict(name_prior or {})
        self.asks = asks
        options = options or Options()
        self.call_format = get_format(options.format or uses_native_tool_format(tokenizer) or DEFAULT_FORMAT)
        self.format = self.call_format.name
        self.options = options.replace(format=self.format)
        forced = tool_choice_name(tool_choice)
        self.mode = "named" if forced else (tool_choice or "auto")
        if self.mode not in TOOL_CHOICES + ("named",):
            raise ConstrainedFCError(f"tool_choice must be one of {TOOL_CHOICES} or a function")
        self.tools = list(tools or [])
        if not self.tools and self.mode in ("required", "named"):
            raise ConstrainedFCError(f"tool_choice={tool_choice!r} needs at least one tool")
        self.grammar = None
        self._key = (_tools_json(self.tools), forced) if self.tools else None
        if self.tools:
            self.grammar = _compile_cached(self._key[0], self.options, self._key[1])
        self.trigger = trigger = self.call_format.trigger
        ids = tokenizer.encode(trigger, add_special_tokens=False) if trigger else []
        self.trigger_ids = ids
        self.trigger_id = ids[0] if len(ids) == 1 else None
        if self.mode == "auto" and self.tools and self.trigger_id is None:
            raise ConstrainedFCError(
                f"format {self.format!r} has no single trigger token in this tokenizer ({trigger!r}), so "
                "tool_choice='auto' cannot tell when a call starts; use 'required' or name a function")
        self.eos_ids = eos_ids(tokenizer)
        # What the session writes to close a list early (nothing: the list ends where the grammar is complete).
        close = self.call_format.list_close
        self.close_ids = tokenizer.encode(close, add_special_tokens=False) if close else []

    @property
    def constrained(self) -> bool:
        return self.grammar is not None and self.mode != "none"

    def token_text(self, token: int) -> str:
        """One token's text (cached per tokenizer)."""
        cache = _TOKEN_TEXT.setdefault(self.tokenizer, {})
        text = cache.get(token)
        if text is None:
            text = cache[token] = self.tokenizer.decode([token], skip_special_tokens=False)
        return text

    def matcher(self, n_vocab: int | None = None, *, max_calls: int | None = None) -> TokenMatcher:
        """A matcher at the start of the call list; `max_calls` holds it to fewer calls than the options do."""
        grammar = self.grammar
        if max_calls is not None:
            grammar = _compile_cached(self._key[0], self.options.replace(max_calls=max_calls), self._key[1])
        return TokenMatcher(grammar.body_lark, self.tokenizer, n_vocab=n_vocab)


class SchemaPlan:
    """The plan of a reply held to one JSON Schema from its first token (OpenAI's `response_format`): the same
    session runs it, with the grammar active from the start and no trigger, list or duplicate rule."""

    mode = "json"
    format = call_format = None
    tools: list = []
    trigger, trigger_ids, trigger_id, close_ids = "", [], None, []
    name_prior: dict = {}  # no call, so no name to steer
    constrained = True

    def __init__(self, tokenizer, schema):
        from ..compiler.schema_compiler import compile_schema
        self.tokenizer = tokenizer
        self.schema = schema
        self.grammar = compile_schema(schema, warn=False)
        self.eos_ids = eos_ids(tokenizer)

    def matcher(self, n_vocab: int | None = None) -> TokenMatcher:
        return TokenMatcher(self.grammar.lark, self.tokenizer, n_vocab=n_vocab)


def eos_ids(tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids:
        raise ConstrainedFCError("the tokenizer has no end-of-sequence token")
    return ids
