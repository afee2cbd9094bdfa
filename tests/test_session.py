"""The one per-row state machine (`runtime.session.Session`), driven by hand with real token ids: trigger,
tool_choice, forced runs, the duplicate-call rule with and without rollback, end-of-sequence, schema replies.
Both decoding paths (our loop, the HF processor) are only drivers of this; their end-to-end tests live in
test_runtime.py."""
import json

import pytest
import torch

from constrained_fc.chat import TOOL_CALLS
from constrained_fc.runtime.matcher import allocate_bitmask
from constrained_fc.runtime.plan import CallPlan, SchemaPlan
from constrained_fc.runtime.session import Session

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def n_vocab(tok):
    return len(tok)


def run_forced(session):
    """Feed forced runs until the session wants a sampled token; return what was forced."""
    out = []
    while not session.done and (forced := session.next_forced()):
        session.feed(forced, forced=True)
        out += forced
    return out


def test_auto_text_then_trigger_then_call(tokenizer):
    tok = tokenizer
    plan = CallPlan(tok, TOOLS)
    s = Session(plan, n_vocab(tok))
    assert s.phase == "text" and s.next_forced() == []
    s.feed(ids(tok, "Sure."))
    assert s.phase == "text" and not s.in_call
    s.feed([plan.trigger_id])
    assert s.phase == "call" and s.in_call
    forced = run_forced(s)
    assert tok.decode(forced).startswith('[{"name": "get_weather", "arguments": {"city":')  # one tool: forced
    # The rest, token by token: every token the model writes must pass the mask (a forced one is fed as such).
    rest = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'[len(tok.decode(forced)):]
    for t in ids(tok, rest):
        if s.done:
            break
        if s.next_forced()[:1] == [t]:
            s.feed([t], forced=True)
            continue
        logits = torch.zeros(n_vocab(tok))
        s.constrain(logits, allocate_bitmask(1, n_vocab(tok)))
        assert torch.isfinite(logits[t]) and not torch.isfinite(logits).all()
        s.feed([t])
    if not s.done:
        s.feed([tok.eos_token_id])  # the list is complete; the model ends the turn
    assert s.done and s.finish == "tool_calls"
    assert tok.decode(s.text_ids) == "Sure."
    assert json.loads(tok.decode(s.body)) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert s.tokens[:len(s.text_ids)] == s.text_ids and plan.trigger_id in s.tokens


def test_end_of_sequence_in_text_stops(tokenizer):
    s = Session(CallPlan(tokenizer, TOOLS), n_vocab(tokenizer))
    s.feed(ids(tokenizer, "Hello") + [tokenizer.eos_token_id])
    assert s.done and s.finish == "stop" and tokenizer.eos_token_id not in s.tokens


def test_none_bans_the_trigger_and_required_forces_it(tokenizer):
    tok = tokenizer
    none = Session(CallPlan(tok, TOOLS, tool_choice="none"), n_vocab(tok))
    logits = torch.zeros(n_vocab(tok))
    none.constrain(logits, allocate_bitmask(1, n_vocab(tok)))
    trigger = tok.convert_tokens_to_ids(TOOL_CALLS)
    assert logits[trigger] == float("-inf") and torch.isfinite(logits).sum() == n_vocab(tok) - 1
    none.feed([trigger])  # even if a driver feeds it, "none" never starts a call
    assert not none.in_call
    for choice in ("required", "get_weather"):
        s = Session(CallPlan(tok, TOOLS, tool_choice=choice), n_vocab(tok))
        assert s.next_forced() == [trigger]
        s.feed([trigger], forced=True)
        assert s.in_call and s.text_ids == [] and s.forced == [True]


def test_trigger_in_prompt_starts_the_call(tokenizer):
    s = Session(CallPlan(tokenizer, TOOLS), n_vocab(tokenizer), started=True)
    assert s.in_call and tokenizer.decode(run_forced(s)).startswith('[{"name": "get_weather"')


def _write(tok, s, text):
    """Feed `text` token by token as the model would; stop where the session forces something else (a driver
    would override the model there)."""
    for t in ids(tok, text):
        if s.done:
            return
        forced = s.next_forced()
        if forced and forced[0] != t:
            return
        s.feed([t], forced=bool(forced))


@pytest.mark.parametrize("rollback", [True, False])
def test_a_repeated_call_closes_the_list(tokenizer, rollback):
    tok = tokenizer
    tools = TOOLS + [{"type": "function", "function": {"name": "ping", "parameters": {
        "type": "object", "properties": {}}}}]
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    s = Session(CallPlan(tok, tools), n_vocab(tok), started=True, rollback=rollback)
    _write(tok, s, f"[{call}, {call}, {call}]")
    while not s.done and (forced := s.next_forced()):  # the no-rollback path forces the closing bracket
        s.feed(forced[:1], forced=True)
    assert s.done and s.finish == "tool_calls" and s.duplicates_dropped >= 1
    body = json.loads(tok.decode(s.body))
    if rollback:  # the repeat is gone from the text
        assert body == [json.loads(call)] and s.duplicates_dropped == 1
    else:  # closed at the first place a list can close after the repeat ("}," fuses the end with a comma)
        assert body == [json.loads(call)] * len(body) and 2 <= len(body) <= 3


def test_schema_plan_is_held_from_the_first_token(tokenizer):
    tok = tokenizer
    plan = SchemaPlan(tok, {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                            "additionalProperties": False})
    s = Session(plan, n_vocab(tok))
    assert s.in_call and s.scanner is None
    _write(tok, s, '{"ok": true}')
    if not s.done:
        s.feed([tok.eos_token_id])
    assert s.done and s.finish == "stop" and json.loads(tok.decode(s.tokens)) == {"ok": True}


TWINS = [{"type": "function", "function": {"name": name, "parameters": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}
    for name in ("math_gcd", "math_lcm", "number_theory_gcd")]


def _greedy_names(tok, s, limit=40):
    """Drive `s` greedily on flat logits (the model has no preference): only the constraint and the name prior
    decide. Returns the names of the calls written."""
    for _ in range(limit):
        if s.done:
            break
        forced = s.next_forced()
        if forced:
            s.feed(forced, forced=True)
            continue
        logits = torch.zeros(n_vocab(tok))
        s.constrain(logits, allocate_bitmask(1, n_vocab(tok)))
        t = int(torch.argmax(logits))
        if s.scanner.open_name() is None:  # past the name: end the call list as soon as the grammar lets us
            for end in ids(tok, "1}]") + [tok.eos_token_id]:
                if torch.isfinite(logits[end]):
                    t = end
                    break
        s.feed([t])
    return [s.scanner.name(c) for c in s.scanner.calls]


@pytest.mark.parametrize("favoured", ["math_lcm", "number_theory_gcd", "math_gcd"])
def test_the_retrieval_prior_steers_the_choice_of_name(tokenizer, favoured):
    # Flat logits: without a prior the first allowed token wins; with one, the best-ranked name does, whatever
    # its place in the list and whether or not it shares its first tokens with another name.
    prior = {n: (0.0 if n == favoured else -5.0) for n in ("math_gcd", "math_lcm", "number_theory_gcd")}
    s = Session(CallPlan(tokenizer, TWINS, name_prior=prior), n_vocab(tokenizer), started=True)
    assert _greedy_names(tokenizer, s)[:1] == [favoured]


def test_without_a_prior_the_name_is_the_models_choice(tokenizer):
    s = Session(CallPlan(tokenizer, TWINS), n_vocab(tokenizer), started=True)
    plain = _greedy_names(tokenizer, s)
    s = Session(CallPlan(tokenizer, TWINS, name_prior={"math_gcd": 0.0, "math_lcm": 0.0,
                                                       "number_theory_gcd": 0.0}),
                n_vocab(tokenizer), started=True)
    assert _greedy_names(tokenizer, s) == plain  # equal priors change nothing


def test_the_prior_leaves_free_text_and_arguments_alone(tokenizer):
    plan = CallPlan(tokenizer, TWINS, name_prior={"math_gcd": 0.0, "math_lcm": -9.0, "number_theory_gcd": -9.0})
    s = Session(plan, n_vocab(tokenizer))
    logits = torch.randn(n_vocab(tokenizer))
    before = logits.clone()
    s.constrain(logits, allocate_bitmask(1, n_vocab(tokenizer)))  # text phase (auto): untouched
    assert torch.equal(logits, before)
    s.feed([plan.trigger_id])
    _write(tokenizer, s, '[{"name": "math_lcm", "arguments": {"n": ')
    logits = torch.zeros(n_vocab(tokenizer))
    s.constrain(logits, allocate_bitmask(1, n_vocab(tokenizer)))
    allowed = logits[torch.isfinite(logits)]
    assert len(allowed) > 0 and bool((allowed == 0).all())  # a number's digits: mask only, no bias


def _logits_at_name(tok, prior, asks, written):
    """A session with `prior` and `asks` fed `written` (which ends inside a call's name), flat logits
    constrained at the next token: (session, logits, {allowed token: its text})."""
    s = Session(CallPlan(tok, TWINS, name_prior=prior, asks=asks), n_vocab(tok), started=True, rollback=True)
    _write(tok, s, written)
    logits = torch.zeros(n_vocab(tok))
    s.constrain(logits, allocate_bitmask(1, n_vocab(tok)))
    return s, logits, {t: tok.decode([t]) for t in torch.isfinite(logits).nonzero().flatten().tolist()}


def test_a_second_call_keeps_to_called_tools_and_the_tools_the_request_asks_for(tokenizer):
    # The request asks for math_gcd (0) and, in a second ask, math_lcm (0); number_theory_gcd is a near-twin
    # it does not ask for (-5). After a call to math_gcd, a next call to math_gcd (parallel) or math_lcm keeps
    # the top; the twin stays 5 below, so a model unsure between it and a repeat writes the repeat.
    prior = {"math_gcd": 0.0, "math_lcm": 0.0, "number_theory_gcd": -5.0}
    s, logits, text = _logits_at_name(tokenizer, prior, 2, '[{"name": "math_gcd", "arguments": {"n": 1}}, {"name": "')
    assert s.scanner.open_name() == ""
    best = {text[t] for t in text if logits[t] == logits[torch.isfinite(logits)].max()}
    assert best and all("math_gcd".startswith(b) or "math_lcm".startswith(b) for b in best)
    assert any(logits[t] == -5.0 for t in text if "number_theory_gcd".startswith(text[t]))


def test_a_called_tool_counts_as_relevant_at_the_next_call(tokenizer):
    # The model's first call overruled the prior (number_theory_gcd, -5): a second call to it is not pushed
    # away (0, like the best tool), since the model's own choice may be the right one. (Two asks: the
    # penalty past the asks, tested below, stays out of it.)
    prior = {"math_gcd": 0.0, "math_lcm": -8.0, "number_theory_gcd": -5.0}
    _, logits, text = _logits_at_name(tokenizer, prior, 2,
                                      '[{"name": "number_theory_gcd", "arguments": {"n": 1}}, {"name": "')
    twin = [t for t in text if "number_theory_gcd".startswith(text[t])]
    assert twin and all(logits[t] == 0.0 for t in twin)


@pytest.mark.parametrize("asks", [1, 2])
def test_past_its_asks_a_list_keeps_to_the_tools_it_called(tokenizer, asks):
    # One ask, answered by a call to math_gcd: a next call to a new tool, even one the ranking rates as high as
    # math_lcm, is lowered by BEYOND_ASKS_LOGITS, so a model unsure of it writes a repeat (which the duplicate
    # rule drops). Two asks: one tool per ask is expected, math_lcm keeps its prior.
    from constrained_fc.runtime.session import BEYOND_ASKS_LOGITS
    prior = {"math_gcd": 0.0, "math_lcm": 0.0, "number_theory_gcd": -1.0}
    spent = BEYOND_ASKS_LOGITS if asks == 1 else 0.0
    assert BEYOND_ASKS_LOGITS > 0
    called = '[{"name": "math_gcd", "arguments": {"n": 1}}, {"name": "'

    _, logits, text = _logits_at_name(tokenizer, prior, asks, called)
    twin = [t for t in text if "number_theory_gcd".startswith(text[t])]
    assert twin and all(logits[t] == -1.0 - spent for t in twin)
    _, logits, text = _logits_at_name(tokenizer, prior, asks, called + "math_")  # past the shared prefix
    lcm = [t for t in text if "lcm".startswith(text[t])]
    gcd = [t for t in text if "gcd".startswith(text[t])]
    assert lcm and gcd
    assert all(logits[t] == -spent for t in lcm) and all(logits[t] == 0.0 for t in gcd)
