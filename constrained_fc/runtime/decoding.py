"""Stage 5: our own decoding loop. Free text until the trigger; then every token is masked by the grammar and
the tokens it forces are fed in ONE forward pass (fast-forward) through the KV cache; the call list ends when
the grammar completes, when `max_calls` is reached, or when the model starts to repeat an earlier call (the
matcher is rolled back to the separator and the list is closed instead)."""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch
from transformers import DynamicCache

import jsonschema

from ..compiler.options import UNSET, Options
from ..compiler.tools import Tool, ToolCall, new_call_id, normalize_tool
from ..errors import ConstrainedFCError, ContextLengthError
from ..retrieval import ToolIndex, offer_tools
from .matcher import allocate_bitmask
from .plan import CallPlan, SchemaPlan
from .reply import parse_body
from .session import Session


@dataclass
class Stats:
    prompt_tokens: int = 0
    tokens_generated: int = 0  # every new token, sampled or forced
    tokens_forced: int = 0  # tokens the grammar forced (no sampling needed)
    forward_passes: int = 0  # prompt passes included (one per prefill segment, see prefill_segments)
    prompt_ms: float = 0.0
    decode_ms: float = 0.0
    mask_us_per_token: float = 0.0  # llguidance's time per mask computed
    mask_wait_us_per_token: float = 0.0  # what decoding waited per masked token (the rest ran under the forward)
    duplicates_dropped: int = 0
    prompt_tokens_reused: int = 0  # leading prompt tokens whose KV came from the prompt cache (not prefilled)

    @property
    def forced_share(self) -> float:
        return self.tokens_forced / self.tokens_generated if self.tokens_generated else 0.0


@dataclass
class Result:
    content: str
    tool_calls: list = field(default_factory=list)  # list[ToolCall]; check `.valid` / `.error`
    finish_reason: str = "stop"  # "stop" | "tool_calls" | "length"
    stats: Stats = field(default_factory=Stats)
    text: str = ""  # the raw generated text, trigger included
    error: str | None = None  # set only if the finished call text failed to parse (an engine disagreement)
    token_ids: list = field(default_factory=list, repr=False)  # every generated token, trigger included
    forced: list = field(default_factory=list, repr=False)  # parallel to token_ids: forced by the grammar?
    incomplete_call: bool = False  # the token limit cut a call list before it closed; its calls are dropped
    retrieved_tools: list | None = None  # with retrieve=k: the names of the tools this turn was offered

    @property
    def valid_calls(self) -> list[ToolCall]:
        return [c for c in self.tool_calls if c.valid]

    def to_message(self) -> dict:
        # A turn cut by the token limit before any text or call still goes back as a (possibly empty) text
        # turn: the next request of the conversation must render it, not fail on it.
        msg: dict[str, Any] = {"role": "assistant",
                               "content": self.content if (self.content or not self.tool_calls) else None}
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return msg

    def to_dict(self) -> dict:
        return {"content": self.content, "finish_reason": self.finish_reason, "text": self.text,
                "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments, "error": c.error}
                               for c in self.tool_calls], "retrieved_tools": self.retrieved_tools,
                "stats": dict(asdict(self.stats), forced_share=self.stats.forced_share)}


def prefill_segments(tokenizer, ids: list[int]) -> list[int]:
    """Where the prompt's prefill is cut (positions strictly inside `ids`, ascending): right after
    `[/AVAILABLE_TOOLS]` (a second question with the same tools starts there) and right after each earlier
    assistant turn's header `<|im_start|>assistant\n` (where the model began to write: the prompt that produced
    that turn ended exactly there, so an agent's next step or a conversation's next turn starts there). Decided
    by the ids up to each point only, so two prompts with a common prefix cut it alike. A single-turn prompt
    with tools is two passes (tools block | question and header), one without tools is one."""
    from ..chat import END_AVAILABLE_TOOLS, GENERATION_PROMPT
    end_tools = tokenizer.convert_tokens_to_ids(END_AVAILABLE_TOOLS)
    unk = tokenizer.unk_token_id
    header = tokenizer.encode(GENERATION_PROMPT, add_special_tokens=False)
    if unk is not None and unk in header:
        header = []
    k = len(header)
    cuts = []
    for i, t in enumerate(ids[:-1]):
        if t == end_tools and end_tools != unk:
            cuts.append(i + 1)
        elif k and t == header[-1] and i + 1 >= k and ids[i + 1 - k:i + 1] == header:
            cuts.append(i + 1)
    return cuts


def last_logits_only(model) -> dict:
    """The forward keyword that computes the output head at the last position only, as `model.generate` does:
    our loop only reads the last position's logits, so the head (576 x 49,152 on SmolLM2) over every other
    position of a prefill or a forced run is wasted work. {} for a model whose forward lacks it."""
    supports = getattr(model, "_supports_logits_to_keep", None)
    return {"logits_to_keep": 1} if supports is not None and supports() else {}


def vocab_size(model) -> int | None:
    """How many logits the model gives per position (its output embedding's rows), known before any forward
    pass; None for a model that does not say."""
    try:
        head = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None


def _resolve_prompt_cache(value):
    from .prompt_cache import SHARED, PromptCache
    if value is True:
        return SHARED
    if value is False or value is None:
        return None
    if isinstance(value, PromptCache):
        return value
    raise ConstrainedFCError(f"prompt_cache must be True, False or a PromptCache, got {value!r}")


def context_length(model) -> int | None:
    """The model's context window in tokens (its position-embedding limit), or None when it declares none."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_to_context(model, prompt_ids: list[int], max_new_tokens: int) -> int:
    """Context policy (README, "Guarantees"): a prompt that does not fit is an error before any work; a reply
    is cut where the context ends (finish_reason "length"), never run past it. Returns the token budget."""
    context = context_length(model)
    if context is None:
        return max_new_tokens
    if len(prompt_ids) >= context:
        raise ContextLengthError(len(prompt_ids), context)
    return min(max_new_tokens, context - len(prompt_ids))


def _sample(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, gen) -> int:
    if not do_sample or temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter_(0, idx[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))


def _check_generation_args(max_new_tokens, do_sample, temperature, top_p) -> None:
    """Bad sampling settings fail here, by name, not later inside torch."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ConstrainedFCError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if do_sample:
        if not isinstance(temperature, (int, float)) or temperature < 0:
            raise ConstrainedFCError(f"temperature must be a number >= 0, got {temperature!r}")
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ConstrainedFCError(f"top_p must be in (0, 1], got {top_p!r}")


def generate(model, tokenizer, messages, tools, *, tool_choice: Any = "auto", options: Options | None = None,
             fast_forward: bool = True, max_new_tokens: int = 256, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, stream: bool = False,
             seed: int | None = None, response_format: dict | None = None, prompt_cache: Any = True,
             retrieve: int | None = None, format: str | None = UNSET, parallel: bool = UNSET,
             max_calls: int | None = UNSET, max_string_length: int | None = UNSET,
             max_array_items: int | None = UNSET, whitespace: str = UNSET, strict: bool = UNSET):
    """Generate one assistant turn. Returns a `Result`; with stream=True, an iterator of OpenAI-style deltas
    (`{"content": ...}`, `{"tool_calls": [{"index", "id", "function": {"name" | "arguments"}}]}`) ending with
    `{"finish_reason": ..., "result": Result}` (plus `"withdrawn_tool_calls": [index, ...]` when the token
    limit cut calls whose deltas were already streamed: they are not in the result).

    options: an `Options` (format, parallel, max_calls, max_string_length, max_array_items, whitespace,
    strict; defaults and meaning documented there); the same names as plain keywords override its fields.
    fast_forward feeds the tokens the grammar forces in one forward pass; with False they are fed one pass
    each. Both produce the same tokens.

    prompt_cache: True (the process-wide `prompt_cache.SHARED`), False, or a `PromptCache`: the KV of the longest
    prefix of this prompt already run through this model is reused, so only the rest is prefilled (a second
    question with the same tools, an agent's next step); `stats.prompt_tokens_reused` says how many.

    response_format (OpenAI's shape): `{"type": "json_object"}` or `{"type": "json_schema", "json_schema":
    {"schema": {...}}}` holds the whole reply to JSON (of that schema, compiled with `compile_schema`) from the
    first token; the reply's `content` is the JSON text. It cannot be combined with tools yet.

    retrieve=k: `tools` is a library (a list of any size, or a `retrieval.ToolIndex`); only the k tools that
    best match the last user message, plus the tools the conversation already called and the one tool_choice
    names, go into the prompt and the grammar (`result.retrieved_tools` lists them), and the ranking steers
    which of them a call names (`ToolIndex(prior_weight=...)`, 0 leaves it to the model). See `retrieval`.

    messages may also be a list of conversations: they are decoded as one batch (`batch.decode_batch`, one
    session per row, fast-forward per row) and a list of `Result`s comes back, in order; `tools` is then one
    list for every conversation or a list of lists, one per conversation. A batch does not stream and does not
    use the prompt cache."""
    _check_generation_args(max_new_tokens, do_sample, temperature, top_p)
    options = Options.resolve(options, format=format, parallel=parallel, max_calls=max_calls,
                              max_string_length=max_string_length, max_array_items=max_array_items,
                              whitespace=whitespace, strict=strict)
    schema = response_schema(response_format)
    if schema is not None and tools and tool_choice != "none":
        raise ConstrainedFCError("response_format json_object / json_schema cannot be combined with tools "
                                 "(send tool_choice='none' or no tools)")
    from .batch import decode_batch, is_batch
    if is_batch(messages):
        if stream:
            raise ConstrainedFCError("stream=True takes one conversation, not a list of them")
        row_tools = tools if is_batch(tools) else [tools] * len(messages)
        if len(row_tools) != len(messages):
            raise ConstrainedFCError(f"{len(messages)} conversations but {len(row_tools)} tool lists: pass one "
                                     "tool list for all, or one per conversation")
        runs = [_Decoder(model, tokenizer, conversation, row, tool_choice=tool_choice, options=options,
                         fast_forward=fast_forward, max_new_tokens=max_new_tokens, do_sample=do_sample,
                         temperature=temperature, top_p=top_p, seed=seed, stream=False, prompt_cache=False,
                         schema=schema, retrieve=retrieve) for conversation, row in zip(messages, row_tools)]
        results = decode_batch(model, tokenizer, [run.plan for run in runs], [run.prompt_ids for run in runs],
                               budgets=[run.max_new_tokens for run in runs], fast_forward=fast_forward,
                               sampling=(do_sample, temperature, top_p), seed=seed)
        for run, result in zip(runs, results):
            result.retrieved_tools = run.retrieved
        return results
    run = _Decoder(model, tokenizer, messages, tools, tool_choice=tool_choice, options=options,
                   fast_forward=fast_forward, max_new_tokens=max_new_tokens, do_sample=do_sample,
                   temperature=temperature, top_p=top_p, seed=seed, stream=stream, prompt_cache=prompt_cache,
                   schema=schema, retrieve=retrieve)
    if stream:
        return run.events()
    for _ in run.events():
        pass
    return run.result


class _Decoder:
    """One conversation through our loop: prefill (with the prompt cache), then one `Session` decides every
    token; a forced run is fed in one forward pass (fast_forward) and a repeated call is rolled back."""

    def __init__(self, model, tokenizer, messages, tools, *, tool_choice, options, fast_forward, max_new_tokens,
                 do_sample, temperature, top_p, seed, stream, prompt_cache=True, schema=None, retrieve=None):
        from ..chat import encode_prompt
        self.model, self.tok = model, tokenizer
        self.retrieved: list[str] | None = None  # the names of the tools retrieve=k chose
        name_prior, asks = None, 1
        if retrieve is not None or isinstance(tools, ToolIndex):
            offer = offer_tools(tools, messages, retrieve, tool_choice=tool_choice)
            tools, name_prior, asks = offer.tools, offer.name_prior, offer.asks
            self.retrieved = [t.name if isinstance(t, Tool) else normalize_tool(t, i).name
                              for i, t in enumerate(tools)]
        if schema is not None:
            self.plan = SchemaPlan(tokenizer, schema)
            tools_for_prompt = None
        else:
            self.plan = CallPlan(tokenizer, tools, tool_choice=tool_choice, options=options,
                                 name_prior=name_prior, asks=asks)
            tools_for_prompt = [t.to_openai() for t in self.plan.grammar.tools] if self.plan.grammar else tools
        self.prompt_ids = encode_prompt(tokenizer, messages, tools_for_prompt or None)
        self.fast_forward = fast_forward
        self.max_new_tokens = fit_to_context(model, self.prompt_ids, max_new_tokens)
        self.sampling = (do_sample, temperature, top_p)
        self.gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.stream = stream
        self.prompt_cache = _resolve_prompt_cache(prompt_cache)
        self.head = last_logits_only(model)
        self.result: Result | None = None

    # ----------------------------------------------------------------------------------------------------------
    def _forward(self, ids: list[int]) -> torch.Tensor:
        x = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        out = self.model(input_ids=x, past_key_values=self.cache, use_cache=True, **self.head)
        self.stats.forward_passes += 1
        return out.logits[0, -1].float()

    def _prefill(self, forced: list[int]) -> torch.Tensor:
        """Run the prompt through the model, cut where `prefill_segments` cuts it (with or without the cache, so
        a reused part holds exactly the KV a fresh prefill computes: greedy output does not depend on what the
        cache held), reusing what the prompt cache has. `forced`: tokens the session forces before the model
        writes anything (the trigger of a required / named call and the grammar's forced run after it); they
        ride in the prompt's last pass, whose own logits nothing needs. Returns the next-token logits."""
        tok, prompt_ids = self.tok, self.prompt_ids
        ends = prefill_segments(tok, prompt_ids) + [len(prompt_ids)]
        reused, cache, logits = (self.prompt_cache.lookup(self.model, tok, prompt_ids, ends)
                                 if self.prompt_cache is not None else (0, None, None))
        self.cache = cache if cache is not None else DynamicCache()
        self.stats.prompt_tokens_reused = reused
        t0 = time.perf_counter()
        # What the cache keeps with the prompt's KV: the logits after it (None when the last pass ran past it).
        # A copy, since decoding masks `logits` in place.
        self._prompt_logits = logits.clone() if logits is not None else None
        start = reused
        for end in (e for e in ends if e > reused):
            feed = prompt_ids[start:end]
            if end == len(prompt_ids) and forced:
                feed = feed + forced
            logits = self._forward(feed)
            self._prompt_logits = None if forced else logits.clone()
            start = end
        if reused == len(prompt_ids) and forced:
            logits = self._forward(forced)
        self._prompt_ends = [e for e in ends if not (forced and e == len(prompt_ids) and e > reused)]
        self.stats.prompt_ms = 1e3 * (time.perf_counter() - t0)
        return logits

    def events(self) -> Iterator[dict]:
        self.stats = Stats(prompt_tokens=len(self.prompt_ids))
        budget = self.max_new_tokens
        n_vocab = vocab_size(self.model)
        row = forced = None
        if n_vocab is not None:
            row = Session(self.plan, n_vocab, rollback=True)
            forced = forced_run(row, budget) if self.fast_forward else []
            if row.done:
                forced = []  # the grammar forced the whole reply: the model has nothing left to compute
        with torch.inference_mode():
            logits = self._prefill(forced or [])
        t1 = time.perf_counter()
        if row is None:
            row = Session(self.plan, logits.shape[-1], rollback=True)
        elif logits.shape[-1] != n_vocab:
            raise ConstrainedFCError(f"the model's logits have {logits.shape[-1]} entries, its output "
                                     f"embedding {n_vocab} rows")
        self.session = row
        self._streamed_text = ""
        self._stream_state: list[dict] = []
        bitmask = allocate_bitmask(1, row.n_vocab)
        with torch.inference_mode():
            while not row.done and len(row.tokens) < budget:
                feed = next_feed(row, logits, bitmask, 0, budget, self.fast_forward, self.sampling, self.gen)
                yield from self._text_deltas()
                if row.in_call and not row.done:
                    yield from self._call_deltas(final=False)
                if row.done or len(row.tokens) >= budget:
                    break
                if self.fast_forward or not row.next_forced():
                    row.prefetch(bitmask)  # the next mask, computed while the forward pass runs
                logits = self._forward(feed)
        self.stats.decode_ms = 1e3 * (time.perf_counter() - t1)
        if self.prompt_cache is not None:
            # Only the prompt's KV is kept: generated tokens were fed in other shapes than a prefill of the
            # same text would use, so reusing them would change later outputs by rounding.
            self.prompt_cache.store(self.model, self.tok, self.prompt_ids, self.cache, self._prompt_ends,
                                    self._prompt_logits)  # we are done with the cache
        self.result = build_result(self.tok, self.plan, row, self.stats,
                                   call_ids=[state["id"] for state in self._stream_state])
        self.result.retrieved_tools = self.retrieved
        yield from self._text_deltas()
        yield from self._call_deltas(final=True)
        final = {"finish_reason": self.result.finish_reason, "result": self.result}
        # Calls whose deltas were streamed but that are not in the result (the token limit cut them): a
        # client must drop them, so the last event names them.
        withdrawn = list(range(len(self.result.tool_calls), len(self._stream_state)))
        if withdrawn:
            final["withdrawn_tool_calls"] = withdrawn
        yield final

    # -- streaming ---------------------------------------------------------------------------------------------
    def _text_deltas(self) -> Iterator[dict]:
        if not self.stream:
            return
        row = self.session
        ids = row.tokens if self.plan.mode == "json" else row.text_ids
        text = self.tok.decode(ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return  # half a UTF-8 character: wait for the rest
        if len(text) > len(self._streamed_text):
            yield {"content": text[len(self._streamed_text):]}
            self._streamed_text = text

    def _call_deltas(self, final: bool) -> Iterator[dict]:
        """The first call streams live; later calls are held until complete, so a repeated call that gets
        rolled back is never shown."""
        if not self.stream or not self.session.in_call:
            return
        sc = self.session.scanner
        if sc is None:
            return  # a schema reply: it streams as content (`_text_deltas`)
        for i, span in enumerate(sc.calls):
            if i > 0 and not span.complete and not final:
                break
            if final and self.result is not None and i >= len(self.result.tool_calls) and span.complete:
                break
            name = sc.name(span)
            if name is None:
                break
            if i == len(self._stream_state):
                state = {"id": new_call_id(), "sent": 0}
                self._stream_state.append(state)
                yield {"tool_calls": [{"index": i, "id": state["id"], "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}
            state = self._stream_state[i]
            args = sc.arguments_text(span)
            if len(args) > state["sent"]:
                yield {"tool_calls": [{"index": i, "function": {"arguments": args[state["sent"]:]}}]}
                state["sent"] = len(args)


def next_feed(row: Session, logits: torch.Tensor, bitmask: torch.Tensor, r: int, budget: int,
              fast_forward: bool, sampling: tuple, gen) -> list[int]:
    """One step of our loop for one row (`generate` and `batch` both use it): the token sampled from this
    row's `logits` under its constraint plus the forced run that follows, or a forced run alone; without
    fast_forward one token per step. The tokens are fed to the session; the caller feeds them to the model in
    one forward pass. `budget`: the row's token limit."""
    feed: list[int] = []
    forced = row.next_forced()[: budget - len(row.tokens)]
    if not forced and not row.done:
        row.constrain(logits, bitmask, r)
        token = _sample(logits, *sampling, gen)
        row.feed([token])
        feed.append(token)
        if not fast_forward:
            return feed
        forced = row.next_forced()[: budget - len(row.tokens)]
    if forced and not fast_forward:
        row.feed(forced[:1], forced=True)  # one pass per forced token: the same tokens, more passes
        return feed + forced[:1]
    return feed + forced_run(row, budget)


def forced_run(row: Session, budget: int) -> list[int]:
    """Feed `row` every token the grammar forces from here on, as one run (up to the token `budget`), and
    return them: the caller feeds them to the model in one forward pass."""
    run: list[int] = []
    forced = row.next_forced()[: budget - len(row.tokens)]
    while forced:
        row.feed(forced, forced=True)
        run += forced
        forced = row.next_forced()[: budget - len(row.tokens)]
    return run


def build_result(tok, plan, row: Session, stats: Stats, call_ids=()) -> Result:
    """A finished row -> its `Result` (the row's counts go into `stats`): content, calls read back and
    validated (`call_ids`: the ids streamed already), or for a schema reply the JSON text checked against the
    schema."""
    stats.tokens_generated, stats.tokens_forced = len(row.tokens), sum(row.forced)
    stats.duplicates_dropped = row.duplicates_dropped
    stats.mask_us_per_token, stats.mask_wait_us_per_token = row.mask_us_per_token, row.mask_wait_us_per_token
    result = _read_row(tok, plan, row, row.finish or "length", stats, call_ids)
    result.token_ids, result.forced = list(row.tokens), list(row.forced)
    return result


def _read_row(tok, plan, row: Session, finish: str, stats: Stats, call_ids) -> Result:
    text = tok.decode(row.tokens, skip_special_tokens=False)
    if plan.mode == "json":
        return _schema_result(plan.schema, tok.decode(row.tokens, skip_special_tokens=True), finish, stats)
    content = tok.decode(row.text_ids, skip_special_tokens=True).strip()
    if not row.in_call:
        return Result(content=content, finish_reason=finish, stats=stats, text=text)
    body = tok.decode(row.body, skip_special_tokens=False)
    reply = parse_body(plan.grammar, content, body, trusted=True)
    stats.duplicates_dropped += reply.duplicates_dropped
    if finish != "length" and not reply.complete:
        # llguidance finished the grammar but the text does not read back as calls: a disagreement, never
        # expected. Report it on the result instead of raising mid-conversation; no call is presented.
        warnings.warn(f"call text accepted by llguidance does not read back as calls: {body[:200]!r}",
                      RuntimeWarning)
        return Result(content=content, finish_reason=finish, stats=stats, text=text,
                      error="call text did not parse")
    for call, call_id in zip(reply.tool_calls, call_ids):
        call.id = call_id
    return Result(content=content, tool_calls=reply.tool_calls if reply.complete else [],
                  finish_reason=finish if reply.complete else "length", stats=stats, text=text,
                  incomplete_call=not reply.complete)


def _schema_result(schema, content: str, finish: str, stats: Stats) -> Result:
    """A reply held to a schema: its text is the content; a relaxed keyword the grammar let through is caught
    by validating it against the schema."""
    error = None
    if finish == "stop":
        try:
            jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(
                schema).validate(json.loads(content))
        except jsonschema.ValidationError as e:
            error = f"the reply fails the schema: {e.message}"
    return Result(content=content, finish_reason=finish, stats=stats, text=content, error=error)


# -- response_format: the whole reply held to one JSON Schema -------------------------------------------------
def response_schema(response_format: Any) -> dict | bool | None:
    """The JSON Schema an OpenAI `response_format` asks for (None for plain text)."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict) or not isinstance(response_format.get("type"), str):
        raise ConstrainedFCError(f"response_format must be an object with a 'type', got {response_format!r}")
    kind = response_format["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise ConstrainedFCError("response_format json_schema needs {'json_schema': {'schema': {...}}}")
        return spec["schema"]
    raise ConstrainedFCError(f"response_format type must be text, json_object or json_schema, got {kind!r}")
