"""benchmarks/hallucination.py: the per-case scoring on a tiny random Llama (2 BFCL cases per category, all
three modes) and the row aggregation / reduction-ratio logic on hand-made records."""
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import hallucination as hb  # noqa: E402

from constrained_fc.eval.data import BFCL_CATEGORIES, load_bfcl  # noqa: E402

REQUIRED_KEYS = {"category", "mode", "n", "called", "parse_failures", "unknown_function", "schema_violations",
                 "hallucinated_calls", "ast_accuracy", "finish_tool_calls", "mean_new_tokens", "wall_s"}
COUNT_KEYS = ("called", "parse_failures", "finish_tool_calls", "errors")


def rec(category="simple", mode="unconstrained", n_calls=0, unknown=0, schema=0, ast_ok=False, parse_failure=False,
        finish="stop", new_tokens=10, wall_s=1.0, error=None):
    return {"id": f"{category}_x", "category": category, "mode": mode, "calls": [], "n_calls": n_calls,
            "parse_failure": parse_failure, "unknown_function": unknown, "schema_violations": schema,
            "ast_ok": ast_ok, "ast_reason": "", "finish_reason": finish, "new_tokens": new_tokens,
            "prompt_tokens": 100, "wall_s": wall_s, "error": error, "text": ""}


# ----------------------------------------------------------------------------------------------------------
# The scoring function end to end, on a tiny random model

@pytest.fixture(scope="module")
def one_thread():
    # One torch thread: on a busy machine two threads per process oversubscribe the cores (about 8x slower).
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scored(tiny_model, one_thread, tmp_path_factory):
    model, tok = tiny_model
    cases = hb.load_cases(BFCL_CATEGORIES, limit=2)
    records = hb.score(model, tok, cases, hb.MODES, max_new_tokens=12, progress=False)
    out = tmp_path_factory.mktemp("halluc")
    settings = {"model": "tiny", "limit": 2, "categories": list(BFCL_CATEGORIES), "modes": list(hb.MODES),
                "max_new_tokens": 12}
    path, rows, reds = hb.write_outputs(out, records, settings)
    return cases, records, path, rows, reds


def test_outputs_written(scored):
    _, _, path, rows, reds = scored
    for name in ("results.json", "results.md", "hallucination.png", "cases.jsonl"):
        assert (path / name).is_file() and (path / name).stat().st_size > 0, name
    payload = json.loads((path / "results.json").read_text())
    assert set(payload) >= {"machine", "rows", "reduction"}
    assert payload["rows"] == json.loads(json.dumps(rows))
    assert len(payload["reduction"]) == len(BFCL_CATEGORIES) + 1
    md = (path / "results.md").read_text()
    assert "| category | mode |" in md and "reduction (required)" in md and "`ast_accuracy`" in md
    assert (path / "hallucination.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rows_sane(scored):
    _, records, _, rows, _ = scored
    assert len(records) == 2 * len(BFCL_CATEGORIES) * len(hb.MODES)
    assert {(r["category"], r["mode"]) for r in rows} == {(c, m) for c in BFCL_CATEGORIES for m in hb.MODES}
    for r in rows:
        assert REQUIRED_KEYS <= set(r)
        assert r["n"] == 2
        assert 0.0 <= r["ast_accuracy"] <= 1.0
        for k in COUNT_KEYS:
            assert 0 <= r[k] <= r["n"], (k, r)
        assert r["hallucinated_calls"] == r["unknown_function"] + r["schema_violations"] <= r["calls"]
        assert 0 <= r["mean_new_tokens"] <= 12
        assert r["errors"] == 0, [x["error"] for x in records if x["error"]]
        if r["mode"] == "required":
            # the trigger is forced: every case starts a call list, so it either parses or was cut
            assert r["called"] + r["parse_failures"] == r["n"]
        if r["mode"] != "unconstrained":
            assert r["unknown_function"] == 0  # the grammar only knows the listed functions


def test_same_prompt_in_every_mode(scored):
    cases, records, *_ = scored
    for case in cases:
        lengths = {r["prompt_tokens"] for r in records if r["id"] == case.id}
        assert len(lengths) == 1 and lengths.pop() > 0


def test_baseline_is_the_same_greedy_decoder(tiny_model, one_thread):
    # With no trigger written, tool_choice="auto" is plain greedy decoding, so it must match the baseline.
    model, tok = tiny_model
    case = load_bfcl("simple", limit=1)[0]
    base = hb.run_unconstrained(model, tok, case, 10)
    auto = hb.run_constrained(model, tok, case, "auto", 10)
    if "[TOOL_CALLS]" not in auto["text"]:
        assert base["text"] == auto["text"]
        assert base["new_tokens"] == auto["new_tokens"]


class ScriptedModel:
    """Stands in for a model whose `generate` writes a fixed reply (then end-of-sequence unless `eos` is False)."""

    device = "cpu"

    def __init__(self, tok, reply, eos=True):
        self.tok, self.reply, self.eos = tok, reply, eos
        self.generation_config = None
        self.kwargs = None

    def generate(self, ids, attention_mask=None, **kwargs):
        import torch
        self.kwargs = kwargs
        new = self.tok(self.reply, add_special_tokens=False).input_ids + ([self.tok.eos_token_id] if self.eos else [])
        new = new[:kwargs["max_new_tokens"]]
        return torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], dim=1)


TRIANGLE = '{"name": "calculate_triangle_area", "arguments": %s}'


@pytest.mark.parametrize("reply, eos, want", [
    ("[TOOL_CALLS][" + TRIANGLE % '{"base": 10, "height": 5}' + "]", True,
     dict(n_calls=1, ast_ok=True, unknown_function=0, schema_violations=0, parse_failure=False,
          finish_reason="tool_calls")),
    ('[TOOL_CALLS][{"name": "triangle_area", "arguments": {"base": 10, "height": 5}}]', True,
     dict(n_calls=1, ast_ok=False, unknown_function=1, schema_violations=0, parse_failure=False)),
    ("Sure. " + TRIANGLE % '{"base": "ten", "height": 5}', True,
     dict(n_calls=1, ast_ok=False, unknown_function=0, schema_violations=1, parse_failure=False)),
    ("calculate_triangle_area(base=10, height=5, colour='red')", True,
     dict(n_calls=1, ast_ok=False, unknown_function=0, schema_violations=1)),
    ('[TOOL_CALLS][{"name": "calculate_triangle_area", "arguments": {"base": 1', False,
     dict(n_calls=0, ast_ok=False, unknown_function=0, schema_violations=0, parse_failure=True,
          finish_reason="length")),
    ("The area is 25 square units.", True,
     dict(n_calls=0, ast_ok=False, parse_failure=False, finish_reason="stop")),
])
def test_score_case_classifies_baseline_replies(tiny_model, reply, eos, want):
    _, tok = tiny_model
    case = load_bfcl("simple", limit=1)[0]
    model = ScriptedModel(tok, reply, eos)
    r = hb.score_case(model, tok, case, "unconstrained", max_new_tokens=200 if eos else 20)
    assert r["error"] is None
    assert {k: r[k] for k in want} == want
    # the baseline is greedy, stops at the tokenizer's end-of-sequence and lets no repetition penalty in
    kw = model.kwargs
    assert kw["do_sample"] is False and kw["num_beams"] == 1 and kw["repetition_penalty"] == 1.0
    assert kw["eos_token_id"] == [tok.eos_token_id]
    assert r["new_tokens"] <= kw["max_new_tokens"]


def test_irrelevance_accuracy_means_no_call(tiny_model):
    _, tok = tiny_model
    case = load_bfcl("irrelevance", limit=1)[0]
    name = case.functions[0]["name"]
    quiet = hb.score_case(ScriptedModel(tok, "I cannot help with that."), tok, case, "unconstrained")
    loud = hb.score_case(ScriptedModel(tok, f'[TOOL_CALLS][{{"name": "{name}", "arguments": {{}}}}]'), tok, case,
                         "unconstrained")
    assert quiet["ast_ok"] and not loud["ast_ok"] and loud["n_calls"] == 1


# ----------------------------------------------------------------------------------------------------------
# Aggregation and reduction on hand-made records

def test_aggregate_counts():
    records = [
        rec(n_calls=2, unknown=1, schema=1, finish="tool_calls", new_tokens=20, wall_s=2.0),
        rec(n_calls=1, ast_ok=True, finish="tool_calls", new_tokens=10, wall_s=1.0),
        rec(parse_failure=True, finish="length", new_tokens=30, wall_s=3.0),
        rec(mode="required", n_calls=1, schema=1, finish="tool_calls"),
        rec(category="irrelevance", ast_ok=True),
        rec(category="irrelevance", error="RuntimeError: x", finish="error"),
    ]
    rows = hb.aggregate(records)
    assert [(r["category"], r["mode"]) for r in rows] == [("simple", "unconstrained"), ("simple", "required"),
                                                          ("irrelevance", "unconstrained")]
    u = rows[0]
    assert (u["n"], u["called"], u["calls"], u["parse_failures"]) == (3, 2, 3, 1)
    assert (u["unknown_function"], u["schema_violations"], u["hallucinated_calls"]) == (1, 1, 2)
    assert u["ast_accuracy"] == pytest.approx(1 / 3)
    assert u["finish_tool_calls"] == 2
    assert u["mean_new_tokens"] == pytest.approx(20.0)
    assert u["wall_s"] == pytest.approx(6.0) and u["s_per_case"] == pytest.approx(2.0)
    assert rows[1]["hallucinated_calls"] == 1 and rows[1]["n"] == 1
    irr = rows[2]
    assert irr["ast_accuracy"] == 0.5 and irr["errors"] == 1


def test_reduction_ratio_values():
    assert hb.reduction_ratio(10, 2) == 5.0
    assert hb.reduction_ratio(3, 0) == "inf"
    assert hb.reduction_ratio(0, 0) is None
    assert hb.reduction_ratio(0, 4) == 0.0
    assert hb.format_ratio(5.0, 10, 2) == "5× (10 → 2)"
    assert hb.format_ratio("inf", 3, 0) == "∞ (3 → 0)"
    assert hb.format_ratio(None, 0, 0) == "– (0 → 0)"


def test_reductions_per_category_and_overall():
    records = ([rec(category="simple", mode="unconstrained", n_calls=1, unknown=1)] * 4
               + [rec(category="simple", mode="required", n_calls=1, schema=1)] * 2
               + [rec(category="simple", mode="auto")]
               + [rec(category="parallel", mode="unconstrained", n_calls=2, schema=2)]
               + [rec(category="parallel", mode="required", n_calls=2)]
               + [rec(category="parallel", mode="auto", n_calls=1, unknown=0, schema=1)]
               + [rec(category="irrelevance", mode=m) for m in hb.MODES])
    reds = {r["category"]: r for r in hb.reductions(hb.aggregate(records))}
    assert list(reds) == ["simple", "parallel", "irrelevance", "overall"]
    s = reds["simple"]
    assert (s["unconstrained"], s["required"], s["auto"]) == (4, 2, 0)
    assert s["reduction_required"] == 2.0 and s["reduction_auto"] == "inf"
    p = reds["parallel"]
    assert (p["unconstrained"], p["required"], p["auto"]) == (2, 0, 1)
    assert p["reduction_required"] == "inf" and p["reduction_auto"] == 2.0
    assert reds["irrelevance"]["reduction_required"] is None
    assert reds["irrelevance"]["reduction_required_text"] == "– (0 → 0)"
    o = reds["overall"]
    assert (o["unconstrained"], o["required"], o["auto"]) == (6, 2, 1)
    assert o["reduction_required"] == 3.0 and o["reduction_auto"] == 6.0
    assert o["reduction_required_text"] == "3× (6 → 2)"
    # JSON-safe: no float infinities
    assert "Infinity" not in json.dumps(list(reds.values()))
    assert not any(isinstance(v, float) and math.isinf(v) for r in reds.values() for v in r.values())


def test_reductions_need_both_sides():
    only_u = hb.aggregate([rec(mode="unconstrained", n_calls=1, unknown=1)])
    assert hb.reductions(only_u) == []
    only_c = hb.aggregate([rec(mode="required", n_calls=1, unknown=1)])
    assert hb.reductions(only_c) == []
    one_constrained = hb.reductions(hb.aggregate([rec(mode="unconstrained", n_calls=1, unknown=1),
                                                   rec(mode="required", n_calls=1)]))
    assert "reduction_auto" not in one_constrained[0] and one_constrained[0]["reduction_required"] == "inf"


def test_attempted_call():
    names = ["math.factorial", "get_weather"]
    assert hb.attempted_call('[TOOL_CALLS][{"name": "x"', names)
    assert hb.attempted_call('Sure: {"name": "get_weather", "argu', names)
    assert hb.attempted_call("<tool_call>\n{", names)
    assert hb.attempted_call("call math.factorial(5", names)
    assert hb.attempted_call("get_weather (city=", names)
    assert not hb.attempted_call("The factorial of 5 is 120.", names)
    assert not hb.attempted_call("my_get_weather(x) and numpy.math.factorial2(", names)
    assert not hb.attempted_call("```python\ndef get_weather(city):\n    pass", names)


def test_parse_failure_flag_in_baseline():
    # attempted but unparseable -> parse failure; parseable -> a call, no failure; prose -> neither
    class Case:
        functions = [{"name": "get_weather", "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}}}]
    names = [f["name"] for f in Case.functions]
    for text, calls, failure in [('[TOOL_CALLS][{"name": "get_weather", "arguments": {"ci', None, True),
                                 ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]', 1, False),
                                 ("It is sunny.", None, False)]:
        parsed = hb.parse_lenient(text)
        assert (len(parsed) if parsed else None) == calls
        assert (hb.attempted_call(text, names) and not parsed) == failure


def test_score_case_rejects_unknown_mode(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError):
        hb.score_case(model, tok, load_bfcl("simple", limit=1)[0], "sampled")
