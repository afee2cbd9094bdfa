"""The real embedded model (SmolLM2-135M-Instruct) under the grammar: calls always parse and validate,
tool_choice is honoured, fast-forward changes nothing but speed, and calls end (the BFCL bar)."""
import pytest

import constrained_fc as cf
from constrained_fc.chat import TOOL_CALLS

pytestmark = pytest.mark.model


def fn(name, props, required=None, desc=""):
    return {"type": "function", "function": {"name": name, "description": desc, "parameters": {
        "type": "object", "properties": props, "required": required if required is not None else list(props)}}}


WEATHER = fn("get_weather", {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                             "days": {"type": "integer", "minimum": 1, "maximum": 7}}, ["city"], "Weather forecast")
CURRENCY = fn("convert_currency", {"amount": {"type": "number", "minimum": 0},
                                   "from": {"enum": ["USD", "EUR", "GBP"]}, "to": {"enum": ["USD", "EUR", "GBP"]}})
EMAIL = fn("send_email", {"to": {"type": "array", "items": {"type": "string", "format": "email"}, "minItems": 1,
                                 "maxItems": 3},
                          "subject": {"type": "string", "maxLength": 40}, "urgent": {"type": "boolean"}},
           ["to", "subject"])
EVENT = fn("create_event", {"title": {"type": "string"},
                            "when": {"type": "object", "properties": {"date": {"type": "string", "format": "date"},
                                                                      "hour": {"type": "integer", "minimum": 0,
                                                                               "maximum": 23}},
                                     "required": ["date"]},
                            "attendees": {"type": "array", "items": {"type": "object", "properties": {
                                "name": {"type": "string"}, "role": {"enum": ["host", "guest"]}},
                                "required": ["name"]}}}, ["title", "when"])
FACTORIAL = fn("math.factorial", {"n": {"type": "integer", "minimum": 0, "maximum": 20}})
SEARCH = fn("search_flights", {"origin": {"type": "string", "pattern": "^[A-Z]{3}$"},
                               "destination": {"type": "string", "pattern": "^[A-Z]{3}$"},
                               "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
                               "cabin": {"enum": ["economy", "business"]}}, ["origin", "destination"])
NULLABLE = fn("set_reminder", {"text": {"type": "string"}, "minutes": {"type": ["integer", "null"]},
                               "tags": {"type": "array", "items": {"enum": ["work", "home"]}, "maxItems": 2}},
              ["text", "minutes"])

CASES = [
    ("What's the weather in Paris?", [WEATHER]),
    ("Weather in Tokyo for 3 days in fahrenheit please", [WEATHER, CURRENCY]),
    ("Convert 100 dollars to euros", [CURRENCY, WEATHER]),
    ("How much is 250 GBP in USD?", [CURRENCY]),
    ("Email bob@example.com that the meeting moved, subject 'Meeting'", [EMAIL]),
    ("Send an urgent email to ann@corp.io and li@corp.io about the outage", [EMAIL, WEATHER]),
    ("Create an event 'Standup' on 2025-03-04 at 9 with Ann as host", [EVENT]),
    ("Schedule a party on 2024-12-31", [EVENT, EMAIL]),
    ("What is 5 factorial?", [FACTORIAL]),
    ("Compute the factorial of 12", [FACTORIAL, CURRENCY]),
    ("Find flights from JFK to LAX for 2 people", [SEARCH]),
    ("I need a business class flight from CDG to NRT", [SEARCH, WEATHER]),
    ("Remind me to call mom in 30 minutes", [NULLABLE]),
    ("Set a work reminder: submit report", [NULLABLE, EVENT]),
    ("Weather in Berlin and in Rome", [WEATHER]),
    ("Convert 10 EUR to GBP and tell me the weather in London", [CURRENCY, WEATHER]),
    ("Book a flight SFO to SEA and email me at me@x.org", [SEARCH, EMAIL]),
    ("What's 7! ?", [FACTORIAL, SEARCH, WEATHER]),
    ("Plan a meeting called Review on 2025-01-15 at 14", [EVENT, NULLABLE]),
    ("Is it going to rain in Madrid this week?", [WEATHER, EMAIL, CURRENCY, FACTORIAL]),
    ("Café in Zürich: météo demain?", [WEATHER]),
]


@pytest.mark.parametrize("question, tools", CASES, ids=[c[0][:30] for c in CASES])
def test_required_calls_parse_and_validate(smollm, question, tools):
    model, tok = smollm
    # A generous budget here: this test is about validity; the 128-token bar is test_bfcl_calls_end's.
    r = cf.generate(model, tok, [{"role": "user", "content": question}], tools, tool_choice="required",
                    max_new_tokens=512)
    assert r.finish_reason == "tool_calls", r.text
    assert r.tool_calls, r.text
    grammar = cf.compile_tools(tools)
    for call in r.tool_calls:
        assert call.valid, (call, r.text)
        assert call.name in grammar.tool_names
        assert grammar.check(call) is None


@pytest.mark.parametrize("question, tools", CASES[:8], ids=[c[0][:30] for c in CASES[:8]])
def test_none_never_calls(smollm, question, tools):
    model, tok = smollm
    r = cf.generate(model, tok, [{"role": "user", "content": question}], tools, tool_choice="none",
                    max_new_tokens=24)
    assert r.tool_calls == [] and TOOL_CALLS not in r.text


@pytest.mark.parametrize("question, tools", CASES[::3], ids=[c[0][:30] for c in CASES[::3]])
def test_fast_forward_equals_no_fast_forward(smollm, question, tools):
    model, tok = smollm
    msgs = [{"role": "user", "content": question}]
    a = cf.generate(model, tok, msgs, tools, tool_choice="required", fast_forward=True, max_new_tokens=96)
    b = cf.generate(model, tok, msgs, tools, tool_choice="required", fast_forward=False, max_new_tokens=96)
    assert a.text == b.text
    assert [(c.name, c.arguments) for c in a.tool_calls] == [(c.name, c.arguments) for c in b.tool_calls]
    assert a.stats.forward_passes < b.stats.forward_passes


def test_processor_in_model_generate(smollm):
    model, tok = smollm
    from constrained_fc.chat import render_prompt
    import torch
    tools = [WEATHER, CURRENCY]
    msgs = [{"role": "user", "content": "Convert 20 USD to GBP"}]
    ids = tok(render_prompt(tok, msgs, tools), return_tensors="pt", add_special_tokens=False)
    proc = cf.ToolCallLogitsProcessor(tok, tools, tool_choice="required")
    with torch.inference_mode():
        out = model.generate(**ids, logits_processor=[proc], max_new_tokens=96, do_sample=False)
    rep = proc.replies(out)[0]
    ours = cf.generate(model, tok, msgs, tools, tool_choice="required", max_new_tokens=96)
    assert rep.tool_calls and all(c.valid for c in rep.tool_calls)
    assert [(c.name, c.arguments) for c in rep.tool_calls] == [(c.name, c.arguments) for c in ours.tool_calls]


def test_bfcl_calls_end(smollm):
    """Issue bar: first 50 `simple` + 50 `multiple`, required, parallel allowed: >= 95% end with
    finish_reason="tool_calls" within 128 new tokens, and none returns an invalid call."""
    from constrained_fc.eval.data import load_bfcl
    model, tok = smollm
    ended, invalid, n = 0, 0, 0
    for cat in ("simple", "multiple"):
        for case in load_bfcl(cat, limit=50):
            r = cf.generate(model, tok, case.messages, case.functions, tool_choice="required", max_new_tokens=128)
            n += 1
            ended += r.finish_reason == "tool_calls"
            invalid += sum(not c.valid for c in r.tool_calls)
    assert n == 100
    assert ended >= 95, f"only {ended}/100 ended"
    assert invalid == 0
