"""The public training sources and the mixture built from them (no model needed: chat answers are stubbed)."""
import json

import pytest

from finetune.data import call_errors
from finetune.mix import MixConfig, MixBuilder, MixError, bfcl_question_texts, leaks, normalise_text
from finetune.sources import (coerce_to_schema, load_apibank, load_sealtools, python_style_tool,
                              python_type_schema, sealtools_tools, self_instruct_prompts, mt_bench_prompts)
from finetune.data import Example
from finetune.data import RecordError


def _stub_answers(prompts):
    return {p: {"answer": f"An answer of {len(p)} characters.", "finished": True} for p in prompts}


@pytest.fixture(scope="module")
def seal_tools():
    return sealtools_tools()


@pytest.fixture(scope="module")
def mix():
    builder = MixBuilder(MixConfig(total=600, seed=3), _stub_answers)
    return builder, builder.build()


def test_python_types_map_to_json_schema():
    assert python_type_schema("str", "x") == {"type": "string"}
    assert python_type_schema("float", "x") == {"type": "number"}
    assert python_type_schema("List[str]", "x") == {"type": "array", "items": {"type": "string"}}
    assert python_type_schema("list(str)", "x") == {"type": "array", "items": {"type": "string"}}
    assert python_type_schema("Optional[int]", "x") == {"type": "integer"}
    assert python_type_schema("dict", "x") == {"type": "object"}
    with pytest.raises(RecordError, match="unknown parameter type 'complex'"):
        python_type_schema("complex", "tool 'f' parameter 'z'")
    tool = python_style_tool("f", "Does f.", {"a": {"type": "int", "description": "A."}, "b": {"type": "str"}},
                             ["a"])
    assert tool["function"]["parameters"] == {"type": "object", "required": ["a"], "properties": {
        "a": {"type": "integer", "description": "A."}, "b": {"type": "string"}}}


def test_numbers_written_as_strings_are_converted():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": "number"},
                                               "ok": {"type": "boolean"}, "s": {"type": "string"},
                                               "xs": {"type": "array", "items": {"type": "integer"}}}}
    got = coerce_to_schema(schema, {"n": "63", "x": "19.5", "ok": "true", "s": "12", "xs": ["1", "2"]})
    assert got == {"n": 63, "x": 19.5, "ok": True, "s": "12", "xs": [1, 2]}
    assert coerce_to_schema(schema, {"n": "per month"}) == {"n": "per month"}  # left for the schema check


def test_sealtools_loads_with_valid_calls_and_skips_nested(seal_tools):
    examples, report = load_sealtools("dev", tools=seal_tools)
    assert report.loaded == len(examples) > 600
    assert report.reasons["nested"] > 0  # calls that use an earlier call's result cannot be trained on
    multi = [ex for ex in examples if len(ex.calls) > 1]
    assert len(multi) > 300  # independent calls of one request: one parallel call list
    for ex in examples:
        tools = {t["function"]["name"]: t for t in ex.tools}
        for call in ex.calls:
            assert call_errors(tools[call["name"]], call["arguments"]) == []


def test_apibank_keeps_the_dialogue_and_earlier_calls():
    examples, report = load_apibank()
    assert report.loaded > 350
    with_history = [ex for ex in examples if any(m["role"] == "tool" for m in ex.messages)]
    assert with_history, "earlier calls and their results should survive as tool_calls + tool messages"
    ex = with_history[0]
    ids = {c["id"] for m in ex.messages for c in m.get("tool_calls") or []}
    assert all(m["tool_call_id"] in ids for m in ex.messages if m["role"] == "tool")
    assert ex.messages[-1]["role"] == "assistant" and ex.messages[-1]["tool_calls"]
    assert "Generate API Request" not in json.dumps(ex.messages)


def test_chat_prompts():
    prompts = self_instruct_prompts()
    assert len(prompts) > 400
    assert not set(map(normalise_text, prompts)) & set(map(normalise_text, mt_bench_prompts()))


def test_mix_counts_follow_the_shares(mix):
    builder, examples = mix
    counts = builder.report.counts
    expected = MixConfig(total=600, seed=3).counts()
    assert sum(expected.values()) == 600
    for name, n in expected.items():
        assert counts[name] >= n - builder.report.dropped_bfcl
    assert len(examples) == sum(counts.values())


def test_no_bfcl_question_text_in_the_training_data(mix):
    builder, examples = mix
    forbidden = bfcl_question_texts()
    assert len(forbidden) > 1000
    assert [ex.meta for ex in examples if leaks(ex, forbidden)] == []
    # ...and the check does catch one: a BFCL question slipped into a training conversation.
    question = json.loads(next(open(builder_bfcl_file())))["question"][0][0]["content"]
    planted = Example(messages=[{"role": "user", "content": "Please: " + question + " Thanks!"},
                                {"role": "assistant", "content": "ok"}], tools=[])
    assert leaks(planted, forbidden)


def builder_bfcl_file():
    from constrained_fc.eval.data import data_dir
    return data_dir() / "bfcl" / "BFCL_v3_simple.json"


def test_heldout_tools_never_offered(mix):
    builder, examples = mix
    offered = {n for ex in examples for n in ex.tool_names}
    assert not offered & builder.heldout_tool_names
    assert builder.report.heldout_tools > 400  # about 440 tools occur only in the out-of-domain split


def test_mix_has_no_call_and_chat_turns(mix):
    _, examples = mix
    by = {}
    for ex in examples:
        by.setdefault(ex.meta["component"], []).append(ex)
    assert all(not ex.calls and ex.tools for ex in by["no_call"])
    assert all(not ex.calls and ex.tools for ex in by["chat_with_tools"])
    assert all(not ex.tools for ex in by["chat"])
    assert any(len(ex.tools) > len(ex.called_tools) for ex in by["sealtools"])  # distractors


def test_mix_is_deterministic():
    a = MixBuilder(MixConfig(total=120, seed=1), _stub_answers).build()
    b = MixBuilder(MixConfig(total=120, seed=1), _stub_answers).build()
    assert [x.to_json() for x in a] == [x.to_json() for x in b]


def test_bad_recipe_data_is_named():
    with pytest.raises(MixError, match="unknown component"):
        MixConfig.from_mapping({"shares": {"sealtool": 1.0}})
    with pytest.raises(MixError, match="distractors"):
        MixConfig.from_mapping({"distractors": [3, 1]})
    with pytest.raises(MixError, match="hard_distractors"):
        MixConfig.from_mapping({"hard_distractors": 1.5})
    with pytest.raises(MixError, match="synth_mix"):
        MixConfig.from_mapping({"synth_mix": {"parallell": 1.0}})


def test_hard_distractors_come_from_the_requests_field():
    builder = MixBuilder(MixConfig(total=60, seed=0, distractors=(3, 3), hard_distractors=1.0,
                                   shares={"sealtools": 1.0}))
    hard = builder.sealtools(60)
    fields = lambda ex: {builder.tools[n]["_field"] for n in ex.tool_names if n not in ex.called_tools}
    # Every distractor of a request shares its field (unless the field has too few tools), none with hard=0.
    near = [ex for ex in hard if ex.meta["near_distractors"] == 3]
    assert len(near) >= len(hard) // 2 and all(fields(ex) <= set(ex.meta["fields"]) for ex in near)
    assert all(len(ex.tools) - len(ex.called_tools) == 3 for ex in hard)
    easy = MixBuilder(MixConfig(total=60, seed=0, distractors=(3, 3), shares={"sealtools": 1.0})).sealtools(60)
    assert "near_distractors" not in easy[0].meta
    assert sum(fields(ex) <= set(ex.meta["fields"]) for ex in easy) < len(near) / 2


def test_synth_mix_sets_the_synthetic_objectives():
    builder = MixBuilder(MixConfig(total=40, seed=0, synth_mix={"parallel": 1.0}, shares={"synth": 1.0}))
    exs = builder.synth(40)
    assert {ex.meta["objective"] for ex in exs} == {"parallel"}
    assert all(len(ex.calls) >= 2 for ex in exs)
