"""benchmarks/speed.py without the real model: the stop-at-call-end criterion on hand-made token streams, the
speed ratios on hand-made timings, and a smoke run of the per-engine timing for our engines (tiny model)."""
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import speed  # noqa: E402


# -- call_list_span / CallListStop ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, span", [
    ('[{"name": "f", "arguments": {}}]', (0, 32)),
    ('Sure: [{"name": "f", "arguments": {"q": "a]b[c"}}] and more', (6, 50)),  # brackets inside strings
    ('[{"name": "f", "arguments": {"xs": [1, [2]]}}]', (0, 46)),  # nested lists
    ('[{"name": "f", "arguments": {"q": "say \\"]\\" now"}}]', (0, 52)),  # escaped quotes
    ('[not json] then [1, 2]', (16, 22)),  # a balanced but invalid list is skipped as a whole
    ('[{"name": "f", "arguments": {}}', None),  # still open
    ('[{"name": "f", "arguments": {}}, ]', None),  # closed but not JSON
    ("no list at all", None),
])
def test_call_list_span(text, span):
    assert speed.call_list_span(text) == span


def _feed(tok, pieces, prompt=(1, 2, 3)):
    """Feed a token stream one token at a time; return the 0-based step at which the criterion fires."""
    crit = speed.CallListStop(tok, len(prompt))
    ids = list(prompt)
    for step, piece in enumerate(pieces):
        ids += tok.encode(piece, add_special_tokens=False)
        if bool(crit(torch.tensor([ids]), None)[0]):
            return step
    return None


@pytest.fixture(scope="module")
def tok():
    from constrained_fc.model import load_default_tokenizer
    return load_default_tokenizer()


def test_stop_fires_exactly_when_the_list_closes(tok):
    pieces = ['[{"', 'name', '":', ' "', 'f', '",', ' "', 'arguments', '":', ' {"', 'q', '":', ' "', 'a', ']',
              'b', '"', '}}', ']', ' and', ' then', ' more']
    # the "]" inside the string (step 14) and the "}}" (step 17) must not stop it; the closing "]" must
    assert _feed(tok, pieces) == pieces.index("]", 15)


def test_stop_does_not_fire_on_an_open_or_invalid_list(tok):
    assert _feed(tok, ['[{"', 'name', '":', ' "', 'f', '"}', ',', ' ']) is None
    assert _feed(tok, ['[', 'oops', ']', ' [', '1', ']']) == 5  # the first, invalid, list is not a stop


def test_stop_criterion_per_row_and_prompt_ignored(tok):
    prompt = tok.encode('[{"a": 1}]', add_special_tokens=False)  # a complete list in the prompt does not count
    crit = speed.CallListStop(tok, len(prompt))
    done = tok.encode("[1]", add_special_tokens=False)
    open_ = tok.encode("[1,", add_special_tokens=False)
    n = max(len(done), len(open_))
    pad = tok.encode(" ", add_special_tokens=False)
    rows = [prompt + pad * (n - len(done)) + done, prompt + pad * (n - len(open_)) + open_]
    assert crit(torch.tensor(rows), None).tolist() == [True, False]
    assert crit(torch.tensor([prompt]), None).tolist() == [False]


# -- ratios -----------------------------------------------------------------------------------------------------
def test_speed_ratio_is_median_over_common_cases():
    base = {"a": 2.0, "b": 4.0, "c": 6.0, "d": 100.0}
    eng = {"a": 1.0, "b": 1.0, "c": 4.0}  # d missing (an error): left out of both medians
    assert speed.speed_ratio(base, eng) == pytest.approx(4.0 / 1.0)
    assert speed.speed_ratio(eng, base) == pytest.approx(1.0 / 4.0)  # slower gives < 1
    assert speed.speed_ratio(base, {"x": 1.0}) is None
    assert speed.speed_ratio({"a": 3.0}, {"a": 2.0}) == pytest.approx(1.5)


def _rec(engine, case, wall, tokens=10, forced=0, passes=10, valid=True):
    return {"engine": engine, "case": case, "category": "simple", "wall_s": wall, "setup_ms": 1.0,
            "new_tokens": tokens, "forced": forced, "forward_passes": passes, "valid": valid}


def test_summarize_ratios_and_rates():
    stop = {"a": 3.0, "b": 5.0, "c": 4.0}
    eos = {"a": 6.0, "b": 10.0, "c": 8.0}
    recs = [_rec(speed.FAST_FORWARD, "a", 1.0, tokens=20, forced=15, passes=5),
            _rec(speed.FAST_FORWARD, "b", 2.0, tokens=20, forced=10, passes=8, valid=False),
            _rec(speed.FAST_FORWARD, "c", 3.0, tokens=20, forced=5, passes=14),
            {"engine": speed.FAST_FORWARD, "case": "d", "category": "simple", "error": "boom"}]
    row = speed.summarize(speed.FAST_FORWARD, recs, {speed.STOP_AT_END: stop, speed.TO_EOS: eos})
    assert row["n"] == 3 and row["errors"] == 1 and row["error"] == "boom"
    assert row["wall_s_per_call"] == pytest.approx(2.0)
    assert row["ratio_to_unconstrained"] == pytest.approx(4.0 / 2.0)  # the stricter baseline
    assert row["ratio_vs_to_eos"] == pytest.approx(8.0 / 2.0)
    assert row["tokens_per_s"] == pytest.approx(60 / 6.0)
    assert row["forced_share"] == pytest.approx(30 / 60)
    assert row["forward_passes_per_call"] == pytest.approx(9.0)
    assert row["valid_calls"] == pytest.approx(2 / 3)
    # a slower engine must come out below 1
    slow = speed.summarize("x", [_rec("x", k, 2 * v) for k, v in stop.items()], {speed.STOP_AT_END: stop})
    assert slow["ratio_to_unconstrained"] == pytest.approx(0.5)


def test_summarize_all_failed_keeps_the_error():
    row = speed.summarize(speed.XGRAMMAR, [{"engine": speed.XGRAMMAR, "case": "a", "error": "ImportError: x"}])
    assert row == {"kind": "speed", "engine": speed.XGRAMMAR, "n": 0, "errors": 1, "error": "ImportError: x"}


def test_body_schema_shape():
    tools = [{"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}}},
             {"name": "g", "parameters": {"type": "dict", "properties": {}}}]
    s = speed.body_schema(tools)
    assert s["type"] == "array" and s["minItems"] == 1
    names = [v["properties"]["name"]["const"] for v in s["items"]["anyOf"]]
    assert names == ["f", "g"]
    assert s["items"]["anyOf"][0]["properties"]["arguments"]["type"] == "object"  # BFCL "dict" normalised
    assert speed.body_schema(tools[:1])["items"]["properties"]["name"] == {"const": "f"}


# -- smoke: the per-engine timing of our engines on the tiny model -------------------------------------------
ROW_KEYS = {"kind", "engine", "n", "wall_s_per_call", "tokens_per_s", "new_tokens_per_call",
            "forward_passes_per_call", "forced_share", "valid_calls", "setup_ms", "ratio_to_unconstrained",
            "ratio_vs_to_eos"}


def _case():
    from constrained_fc.eval.data import load_bfcl
    try:
        return load_bfcl("simple", limit=1)[0]
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_measure_engine_smoke(tiny_model):
    model, tok = tiny_model
    case = _case()
    budget = 24
    bench = speed.Bench(model, tok, max_new_tokens=budget, mode="required")
    try:
        _, recs = speed.measure_engine(bench, speed.STOP_AT_END, [case], warmup=False)
        stop = speed.walls(recs, speed.STOP_AT_END)
        assert list(stop) == [case.id], recs
        base = {speed.STOP_AT_END: stop, speed.TO_EOS: stop}
        for e, warm in ((speed.FAST_FORWARD, True), (speed.LOGITS_PROCESSOR, False)):
            row, recs = speed.measure_engine(bench, e, [case], warmup=warm, baselines=base)
            assert "error" not in row, row
            assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
            assert row["engine"] == e and row["n"] == 1 and len(recs) == 1
            assert row["wall_s_per_call"] > 0 and row["ratio_to_unconstrained"] > 0
            assert row["ratio_to_unconstrained"] == pytest.approx(stop[case.id] / recs[0]["wall_s"])
            assert 0 < row["new_tokens_per_call"] <= budget
            assert 1 <= row["forward_passes_per_call"] <= 1 + row["new_tokens_per_call"]
            assert 0.0 <= row["forced_share"] <= 1.0 and 0.0 <= row["valid_calls"] <= 1.0
            if e == speed.FAST_FORWARD:
                # '[{"name": "<the only tool>", "arguments": {"' is forced: fed in one pass, not sampled
                assert row["forced_share"] > 0
                assert row["forward_passes_per_call"] < row["new_tokens_per_call"]
                assert row.get("mask_us_in_loop", 0) > 0, recs[0]
            else:
                assert row["forced_share"] == 0.0
            # the body starts as the grammar forces it, whatever the random model wants
            assert recs[0]["output"].startswith('[{"name": "')
    finally:
        bench.close()


def test_auto_mode_looks_for_the_list_after_the_trigger(tok):
    """In auto mode the model writes text, then the trigger, then the list: a JSON list in the text before the
    trigger is not the call, and text without a trigger holds no call."""
    text = 'Here is [1, 2] and [TOOL_CALLS][{"name": "f", "arguments": {}}]'
    assert speed.call_list_span(speed.call_text(text)) is not None
    assert speed.call_text(text).startswith('[{"name"')
    assert speed.call_text("no call [1]") == "no call [1]"


def test_xgrammar_triggered_tags_engine_builds_and_waits_for_the_trigger(tiny_model):
    """The peer closest to our auto: free text until [TOOL_CALLS], then the call list's JSON schema."""
    pytest.importorskip("xgrammar")
    import xgrammar as xgr
    model, tok = tiny_model
    case = _case()
    bench = speed.Bench(model, tok, max_new_tokens=8, mode="auto")
    try:
        prep = bench.setup(speed.XGRAMMAR_TAGS, case)
        assert not bench.prompted_trigger(speed.XGRAMMAR_TAGS) and bench.prompted_trigger(speed.XGRAMMAR)
        grammar = prep.processor.compiled_grammars[0]
        m = xgr.GrammarMatcher(grammar)
        for t in tok.encode("Let me check.", add_special_tokens=False):
            assert m.accept_token(t)  # free text before the trigger
        assert m.accept_token(bench.trigger_ids[0])
        assert not m.accept_token(tok.encode("Hello", add_special_tokens=False)[0])  # the call list now
    finally:
        bench.close()
