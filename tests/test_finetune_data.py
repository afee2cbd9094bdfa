"""The fine-tuning data side: loaders (good and malformed input), the Glaive sample, synthetic data
(determinism, objectives, validity), held-out splits and the command line."""
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune.__main__ import main as cli_main
from finetune.data import (Example, LoadReport, RecordError, call_errors, infer_objective, iter_messages_jsonl,
                           load_examples, order_arguments, split_examples, validate_example)
from finetune.synth import DEFAULT_MIX, Catalogue, CatalogueError, load_catalogue, synthesize

REPO = Path(__file__).resolve().parents[1]
GLAIVE_NAME = Path("data", "glaive", "glaive_toolcall_en_demo.json")

WEATHER = {"name": "get_weather", "description": "Current weather", "parameters": {
    "type": "object", "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}},
    "required": ["location"]}}
FACTORIAL = {"name": "math.factorial", "description": "n!", "parameters": {
    "type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]}}
WEATHER_OAI = {"type": "function", "function": WEATHER}
FACTORIAL_OAI = {"type": "function", "function": FACTORIAL}


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def errors_by_line(report: LoadReport) -> dict[int, str]:
    out = {}
    for e in report.errors:
        m = re.search(r": (?:line|item) (\d+): (.*)$", e)
        assert m, f"error without a location: {e}"
        out[int(m.group(1))] = m.group(2)
    return out


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


@pytest.fixture(scope="module")
def big_synth(catalogue):
    return synthesize(catalogue, 3000, seed=11)


# --------------------------------------------------------------------------------- format 1: function_call
def test_function_call_format_loads(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [
        {"user": {"content": "Weather in Paris?"},
         "function_call": {"name": "get_weather", "arguments": '{"unit": "celsius", "location": "Paris"}'},
         "functions": [WEATHER, FACTORIAL]},
        "",  # blank lines are not records
        {"system": "Be brief.", "user": {"content": "5!"},
         "function_call": {"name": "math.factorial", "arguments": {"n": 5}}, "functions": [FACTORIAL]},
    ])
    examples, report = load_examples(path)
    assert report.format == "function_call" and (report.loaded, report.skipped) == (2, 0)
    first = examples[0]
    assert [m["role"] for m in first.messages] == ["user", "assistant"]
    call = first.messages[1]["tool_calls"][0]
    assert call["type"] == "function" and re.fullmatch(r"[A-Za-z0-9]{9}", call["id"])
    # JSON-string arguments become a dict, in schema order (the order the grammar emits)
    assert list(call["function"]["arguments"].items()) == [("location", "Paris"), ("unit", "celsius")]
    assert first.tools[0] == {"type": "function", "function": WEATHER}
    assert first.meta["line"] == 1 and first.meta["source"] == "train.jsonl" and first.meta["objective"] == "single"
    assert examples[1].meta["line"] == 3 and examples[1].messages[0] == {"role": "system", "content": "Be brief."}


def test_function_call_format_malformed_records_are_skipped_with_line(tmp_path):
    good = {"user": {"content": "Weather in Rome?"}, "function_call": {"name": "get_weather",
            "arguments": {"location": "Rome"}}, "functions": [WEATHER]}
    bad_tool = dict(WEATHER, name="bad name!")
    lines = [
        '{"user": {"content": "hi"}, "function_call": ',                                         # 1 bad JSON
        {"function_call": {"name": "get_weather", "arguments": {}}, "functions": [WEATHER]},      # 2 no user
        {"user": {"content": "x"}, "functions": [WEATHER]},                                       # 3 no call
        {"user": {"content": "x"}, "function_call": {"name": "get_news", "arguments": {}},
         "functions": [WEATHER]},                                                                 # 4 unknown tool
        {"user": {"content": "x"}, "function_call": {"name": "get_weather",
         "arguments": {"location": "Rome", "days": 30}}, "functions": [WEATHER]},                 # 5 > maximum
        {"user": {"content": "x"}, "function_call": {"name": "get_weather",
         "arguments": '{"location": "Rome"'}, "functions": [WEATHER]},                            # 6 bad JSON str
        {"user": {"content": "x"}, "function_call": {"name": "get_weather",
         "arguments": {"unit": "kelvin", "location": "Rome"}}, "functions": [WEATHER]},           # 7 enum
        {"user": {"content": "x"}, "function_call": {"name": "get_weather", "arguments": "[1]"},
         "functions": [WEATHER]},                                                                 # 8 not object
        {"user": {"content": "x"}, "function_call": {"name": "get_weather", "arguments": {}},
         "functions": [WEATHER]},                                                                 # 9 missing req.
        {"user": {"content": "x"}, "function_call": {"name": "bad name!", "arguments": {}},
         "functions": [bad_tool]},                                                                # 10 tool name
        {"user": {"content": "x"}, "function_call": {"name": "f", "arguments": {}},
         "functions": [{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}]},
        "[1, 2, 3]",                                                                              # 12 not object
        good,                                                                                     # 13 loads
    ]
    examples, report = load_examples(write_lines(tmp_path / "bad.jsonl", lines), format="function_call")
    assert (report.loaded, report.skipped) == (1, 12) and examples[0].meta["line"] == 13
    errs = errors_by_line(report)
    assert sorted(errs) == list(range(1, 13))
    assert all(str(tmp_path / "bad.jsonl") in e for e in report.errors)
    assert "bad JSON" in errs[1]
    assert "user.content" in errs[2]
    assert "function_call" in errs[3]
    assert "unknown tool 'get_news'" in errs[4]
    assert "/days" in errs[5] and "maximum" in errs[5]
    assert "not valid JSON" in errs[6]
    assert "/unit" in errs[7] and "kelvin" in errs[7]
    assert "must be a JSON object" in errs[8]
    assert "'location' is a required property" in errs[9]
    assert "must match" in errs[10]
    assert "not a valid JSON Schema" in errs[11]
    assert "JSON object" in errs[12]
    assert report.reasons["schema"] == 3 and report.reasons["unknown_tool"] == 1
    assert "skipped 12" in report.summary()


# ------------------------------------------------------------------------------------ format 2: messages
def test_messages_format_openai_mistral_and_legacy(tmp_path):
    openai = {"messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": {"temp": 3}},
        {"role": "assistant", "content": "It is 3 degrees."}], "tools": [WEATHER_OAI]}
    mistral = {"messages": [
        {"role": "user", "content": "Weather in Oslo and 4!?"},
        {"role": "assistant", "tool_calls": [
            {"id": "A1b2C3d4E", "function": {"name": "get_weather", "arguments": {"location": "Oslo"}}},
            {"id": "Z9y8X7w6V", "function": {"name": "math.factorial", "arguments": {"n": 4}}}]},
        {"role": "tool", "tool_call_id": "Z9y8X7w6V", "content": "24"},
        {"role": "tool", "tool_call_id": "A1b2C3d4E", "content": "cold"}], "tools": [WEATHER_OAI, FACTORIAL]}
    legacy = {"messages": [
        {"role": "user", "content": "3!"},
        {"role": "assistant", "content": None, "function_call": {"name": "math.factorial", "arguments": '{"n": 3}'}},
        {"role": "function", "name": "math.factorial", "content": "6"},
        {"role": "assistant", "content": "6"}], "functions": [FACTORIAL],
        "meta": {"template": "fact#0", "objective": "chat"}}
    examples, report = load_examples(write_lines(tmp_path / "msgs.jsonl", [openai, mistral, legacy]))
    assert report.format == "messages" and (report.loaded, report.skipped) == (3, 0), report.errors
    a, b, c = examples
    assert a.messages[1]["content"] == "Weather in Oslo?"
    assert a.messages[2]["tool_calls"][0]["function"]["arguments"] == {"location": "Oslo"}
    assert a.messages[3] == {"role": "tool", "tool_call_id": "call_abc", "name": "get_weather",
                             "content": '{"temp": 3}'}
    assert a.meta["objective"] == "single"
    assert [x["function"]["name"] for x in b.messages[1]["tool_calls"]] == ["get_weather", "math.factorial"]
    assert b.messages[1]["tool_calls"][1]["type"] == "function" and b.meta["objective"] == "parallel"
    assert [m["name"] for m in b.messages[2:]] == ["math.factorial", "get_weather"]
    call = c.messages[1]["tool_calls"][0]
    assert call["function"] == {"name": "math.factorial", "arguments": {"n": 3}}
    assert c.messages[2]["role"] == "tool" and c.messages[2]["tool_call_id"] == call["id"]
    assert c.tools == [FACTORIAL_OAI]
    assert c.meta["template"] == "fact#0" and c.meta["objective"] == "chat"  # the record's own meta is kept


def test_messages_format_malformed(tmp_path):
    user = {"role": "user", "content": "q"}

    def rec(*msgs, tools=(WEATHER_OAI,)):
        return {"messages": [user, *msgs], "tools": list(tools)}

    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"location": "X"}}}
    lines = [
        "{not json",                                                                                    # 1
        {"tools": [WEATHER_OAI]},                                                                      # 2
        rec({"role": "assistant", "tool_calls": [call]}, {"role": "tool", "tool_call_id": "zz", "content": "r"}),
        rec({"role": "robot", "content": "beep"}),                                                     # 4
        rec({"role": "assistant", "tool_calls": [dict(call, function={"name": "nope", "arguments": {}})]}),
        rec({"role": "assistant", "tool_calls": [dict(call, function={"name": "get_weather",
                                                                      "arguments": {"location": 5}})]}),
        rec({"role": "assistant", "tool_calls": [dict(call, function={"name": "get_weather",
                                                                      "arguments": "{'location': 'X'}"})]}),
        rec({"role": "assistant", "content": "  "}),                                                   # 8
        {"messages": [user], "tools": []},                                                             # 9
        rec({"role": "assistant", "tool_calls": [call]}, tools=[WEATHER_OAI, WEATHER_OAI]),           # 10
        rec({"role": "assistant", "tool_calls": [call]}),                                              # 11 good
    ]
    path = write_lines(tmp_path / "m.jsonl", lines)
    with open(path, "ab") as f:
        f.write(b'{"messages": "\xff\xfe"}\n')                                                           # 12
    examples, report = load_examples(path, format="openai")
    assert (report.loaded, report.skipped) == (1, 11) and examples[0].meta["line"] == 11
    errs = errors_by_line(report)
    assert sorted(errs) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert "bad JSON" in errs[1]
    assert "'messages'" in errs[2]
    assert "'zz' matches no earlier call" in errs[3]
    assert "unknown role 'robot'" in errs[4]
    assert "unknown tool 'nope'" in errs[5]
    assert "/location" in errs[6] and "not of type 'string'" in errs[6]
    assert "not valid JSON" in errs[7]
    assert "neither content nor tool calls" in errs[8]
    assert "no assistant message" in errs[9]
    assert "duplicate tool name" in errs[10]
    assert "UTF-8" in errs[12]


def test_streaming_loader_reports_into_given_report(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", ["oops", {"messages": [{"role": "user", "content": "hi"},
                                                                   {"role": "assistant", "content": "hello"}]}])
    report = LoadReport()
    examples = list(iter_messages_jsonl(path, report))
    assert len(examples) == 1 and examples[0].meta["objective"] == "no_tool"
    assert (report.loaded, report.skipped, report.format) == (1, 1, "messages")


# ------------------------------------------------------------------------------------ format 3: sharegpt
def test_sharegpt_format_and_malformed_items(tmp_path):
    tools = json.dumps([WEATHER, FACTORIAL])
    good = {"conversations": [
        {"from": "human", "value": "Weather in Lima and 3!?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"location": "Lima"}})},
        {"from": "function_call", "value": json.dumps({"name": "math.factorial", "arguments": '{"n": 3}'})},
        {"from": "observation", "value": '{"temp": 20}'},
        {"from": "observation", "value": "6"},
        {"from": "gpt", "value": "20 degrees, and 3! = 6."}], "tools": tools, "system": "sys"}
    items = [
        good,                                                                                          # 0
        {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "{oops"}],
         "tools": tools},                                                                              # 1
        {"conversations": [{"from": "human", "value": "x"}, {"from": "observation", "value": "r"}],
         "tools": tools},                                                                              # 2
        {"conversations": [{"from": "alien", "value": "x"}], "tools": tools},                          # 3
        {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}],
         "tools": "[{not json"},                                                                       # 4
        {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call",
         "value": json.dumps({"name": "get_time", "arguments": {}})}], "tools": tools},                # 5
        {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call",
         "value": json.dumps({"name": "math.factorial", "arguments": {"n": -1}})}], "tools": tools},   # 6
        {"tools": tools},                                                                              # 7
        "just a string",                                                                               # 8
    ]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    examples, report = load_examples(path)
    assert report.format == "sharegpt" and (report.loaded, report.skipped) == (1, 8)
    ex = examples[0]
    assert ex.meta["index"] == 0 and ex.meta["objective"] == "parallel"
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    calls = ex.messages[2]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [{"location": "Lima"}, {"n": 3}]
    assert [m["tool_call_id"] for m in ex.messages[3:5]] == [c["id"] for c in calls]
    errs = errors_by_line(report)
    assert sorted(errs) == list(range(1, 9))
    assert "function_call is not valid JSON" in errs[1]
    assert "observation follows no function_call" in errs[2]
    assert "unknown speaker 'alien'" in errs[3]
    assert "tools are not valid JSON" in errs[4]
    assert "unknown tool 'get_time'" in errs[5]
    assert "/n" in errs[6] and "minimum" in errs[6]
    assert "'conversations'" in errs[7]
    assert all(": item " in e for e in report.errors)


def _glaive_path() -> Path | None:
    candidates = [os.environ.get("FINETUNE_GLAIVE"), REPO / "shared" / GLAIVE_NAME,
                  REPO.parent / "shared" / GLAIVE_NAME]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def test_glaive_demo_file_loads():
    path = _glaive_path()
    if path is None:
        pytest.skip("Glaive sample not present (set FINETUNE_GLAIVE to its path)")
    examples, report = load_examples(path)
    print(f"\n{report.summary()}\n" + "\n".join(report.errors))
    assert report.format == "sharegpt"
    assert report.loaded + report.skipped == len(json.loads(path.read_text(encoding="utf-8")))
    # The demo file holds 300 conversations; exactly one gold call is invalid (a list where the schema
    # declares a number), and it must be skipped rather than learned.
    assert (report.loaded, report.skipped) == (299, 1)
    assert "item 259" in report.errors[0] and "track_calories" in report.errors[0]
    assert "not of type 'number'" in report.errors[0]
    objectives = Counter(ex.meta["objective"] for ex in examples)
    assert objectives["chat"] > 0 and objectives["single"] > 0 and objectives["no_tool"] > 0
    n_calls = sum(len(ex.calls) for ex in examples)
    assert n_calls > 150
    for ex in examples:
        validate_example(ex)
        for m in ex.messages:
            if m["role"] == "tool":
                assert any(c["id"] == m["tool_call_id"] for mm in ex.messages for c in mm.get("tool_calls") or [])


# ------------------------------------------------------------------------------------------- loader misc
def test_load_examples_errors_and_sniffing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_examples(tmp_path / "missing.jsonl")
    path = write_lines(tmp_path / "odd.jsonl", [{"foo": 1}])
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_examples(path)
    with pytest.raises(ValueError, match="unknown data format"):
        load_examples(path, format="csv")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"conversations": []', encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid JSON array"):
        load_examples(broken)
    # a .json file holding JSON lines is read line by line
    lines = write_lines(tmp_path / "lines.json", [{"user": "5!", "function_call": {"name": "math.factorial",
                                                   "arguments": {"n": 5}}, "functions": [FACTORIAL]}] * 2)
    examples, report = load_examples(lines)
    assert report.format == "function_call" and report.loaded == 2 and examples[1].meta["line"] == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=40),
                          st.dictionaries(st.sampled_from(["messages", "tools", "role", "content", "x"]),
                                          st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                                    st.lists(st.integers(), max_size=2)), max_size=3)
                          .map(json.dumps)), min_size=1, max_size=8))
def test_loader_never_dies_on_garbage(tmp_path, lines):
    lines = [x.replace("\n", " ").replace("\r", " ") for x in lines]
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = write_lines(tmp_path / "garbage.jsonl", [*lines, good])
    examples, report = load_examples(path, format="messages")
    records = sum(1 for x in lines if x.strip()) + 1
    assert report.loaded + report.skipped == records
    assert report.loaded == len(examples) >= 1 and len(report.errors) == report.skipped


def test_example_json_round_trip_and_order_arguments():
    ex = Example(messages=[{"role": "user", "content": "Zürich weather"},
                           {"role": "assistant", "content": None, "tool_calls": [
                               {"id": "c1", "type": "function",
                                "function": {"name": "get_weather", "arguments": {"location": "Zürich"}}}]}],
                 tools=[WEATHER_OAI], meta={"objective": "single", "template": "w#0"})
    line = ex.to_json()
    assert "\n" not in line and "Zürich" in line
    back = Example.from_json(line)
    assert back == ex and back.to_json() == line and Example.from_json(json.loads(line)) == ex
    with pytest.raises(ValueError):
        Example.from_json('{"tools": []}')
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"x": {}, "y": {}}},
                                               "b": {"type": "array", "items": {"type": "object", "properties":
                                                                                  {"p": {}, "q": {}}}}}}
    ordered = order_arguments(schema, {"extra": 1, "b": [{"q": 1, "p": 2}], "a": {"y": 1, "x": 2}})
    assert json.dumps(ordered) == '{"a": {"x": 2, "y": 1}, "b": [{"p": 2, "q": 1}], "extra": 1}'


def test_validate_example_rejects_hallucinated_calls():
    def ex(args, name="get_weather"):
        return Example(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": None,
                       "tool_calls": [{"id": "c", "type": "function",
                                       "function": {"name": name, "arguments": args}}]}], tools=[WEATHER_OAI])
    validate_example(ex({"location": "Oslo", "days": 3}))
    for args, name, kind in [({"location": "Oslo", "days": 0}, "get_weather", "schema"),
                             ({"location": "Oslo", "extra": True, "unit": "K"}, "get_weather", "schema"),
                             ({"n": 1}, "math.factorial", "unknown_tool")]:
        with pytest.raises(RecordError) as e:
            validate_example(ex(args, name))
        assert e.value.kind == kind
    date_tool = {"type": "function", "function": {"name": "d", "parameters": {
        "type": "object", "properties": {"day": {"type": "string", "format": "date"}}}}}
    assert call_errors(date_tool, {"day": "2025-02-30"})  # formats are asserted, not just annotations
    assert not call_errors(date_tool, {"day": "2024-02-29"})


# --------------------------------------------------------------------------------------------- synthesis
def test_catalogue_is_large_and_varied(catalogue):
    assert len(catalogue) >= 30
    raw = json.loads((REPO / "finetune" / "catalogue.json").read_text(encoding="utf-8"))
    text = json.dumps([t["function"]["parameters"] for t in raw["tools"]])
    for feature in ('"enum"', '"minimum"', '"maximum"', '"boolean"', '"number"', '"format": "date"',
                    '"format": "email"', '"pattern"', '"multipleOf"', '"uniqueItems"', '"exclusiveMinimum"'):
        assert feature in text, feature
    kinds = set()
    for t in raw["tools"]:
        for p in t["function"]["parameters"]["properties"].values():
            if p.get("type") == "array":
                kinds.add("array_of_" + p["items"].get("type", "?"))
            if p.get("type") == "object":
                kinds.add("nested_object")
        assert len(t["x-synth"]["templates"]) >= 2, t["function"]["name"]
    assert {"array_of_string", "array_of_object", "nested_object"} <= kinds
    assert any(not t["function"]["parameters"]["required"] for t in raw["tools"])  # a no-argument tool
    assert len(catalogue.chains) >= 8


def test_synth_is_deterministic(catalogue):
    a = [e.to_json() for e in synthesize(catalogue, 250, seed=7)]
    b = [e.to_json() for e in synthesize(load_catalogue(), 250, seed=7)]
    c = [e.to_json() for e in synthesize(catalogue, 250, seed=8)]
    assert a == b
    assert a != c
    # an example depends only on (seed, index, objective): a longer run with the same schedule shares values
    assert len(set(a)) == len(a)


def test_synth_objectives(big_synth):
    counts = Counter(e.meta["objective"] for e in big_synth)
    total = sum(DEFAULT_MIX.values())
    for obj, w in DEFAULT_MIX.items():
        assert abs(counts[obj] - 3000 * w / total) <= 1, (obj, counts)
    for e in big_synth:
        obj = e.meta["objective"]
        assert infer_objective(e.messages) == obj
        roles = [m["role"] for m in e.messages if m["role"] != "system"]
        call_turns = [m["tool_calls"] for m in e.messages if m.get("tool_calls")]
        if obj == "single":
            assert roles == ["user", "assistant"] and len(call_turns[0]) == 1
        elif obj == "parallel":
            assert roles == ["user", "assistant"] and 2 <= len(call_turns[0]) <= 3
        elif obj == "nested":
            assert roles == ["user", "assistant", "tool", "assistant"]
            result = json.loads(e.messages[-2]["content"])
            second = e.messages[-1]["tool_calls"][0]["function"]["arguments"]
            flat = json.dumps(result)
            # the second call uses a value that only the first call's result provided
            assert any(json.dumps(v) in flat or (isinstance(v, list) and json.dumps(v[0]) in flat)
                       for v in second.values()), (result, second)
        elif obj == "chat":
            assert roles.count("user") >= 2 and e.messages[-1]["role"] == "assistant"
            for i, m in enumerate(e.messages):
                if m["role"] == "tool":  # every result is followed by a plain-text answer
                    assert e.messages[i + 1]["role"] == "assistant" and e.messages[i + 1]["content"]
        else:
            assert roles == ["user", "assistant"] and not call_turns and e.messages[-1]["content"]
    chats = [e for e in big_synth if e.meta["objective"] == "chat"]
    assert any(not e.calls for e in chats) and any(e.calls for e in chats)  # calls are optional in chat
    assert any(":follow#" in e.meta["template"] for e in chats)
    assert any(":parallel#" in e.meta["template"] for e in big_synth)
    parallels = [e for e in big_synth if e.meta["objective"] == "parallel"]
    assert any(len(set(e.called_tools)) == 1 for e in parallels)
    assert any(len(set(e.called_tools)) > 1 for e in parallels)


def test_every_synth_call_is_valid(big_synth, catalogue):
    n_calls = 0
    used = Counter()
    for e in big_synth:
        validate_example(e)  # same check the loaders apply: known tool, arguments pass the schema
        names = e.tool_names
        assert len(names) == len(set(names))
        distractors = len(names) - len(e.called_tools)
        assert 1 <= distractors <= 4
        assert all(set(t) == {"type", "function"} and "x-synth" not in json.dumps(t) for t in e.tools)
        for call in e.calls:
            n_calls += 1
            used[call["name"]] += 1
            schema = catalogue.tools[call["name"]].params
            assert list(call["arguments"]) == list(order_arguments(schema, call["arguments"]))
        assert e.meta["template"] and e.meta["templates"]
    assert n_calls > 3000
    assert set(used) == set(catalogue.names)  # every tool gets called


def test_synth_phrasing_varies(big_synth):
    users = [m["content"] for e in big_synth for m in e.messages if m["role"] == "user"]
    assert len(set(users)) > 0.8 * len(users)
    assert any(u == u.lower() and any(c.isalpha() for c in u) for u in users)
    assert any(u.startswith(("Hi", "Hey", "Hello")) for u in users)
    assert sum(1 for e in big_synth if e.messages[0]["role"] == "system") > 300
    templates = Counter(e.meta["template"] for e in big_synth if e.meta["objective"] == "single")
    assert len(templates) > 100


def test_synth_mix_and_errors(catalogue):
    only_nested = synthesize(catalogue, 20, seed=1, mix={"nested": 1})
    assert {e.meta["objective"] for e in only_nested} == {"nested"}
    with pytest.raises(ValueError, match="unknown objective"):
        synthesize(catalogue, 5, mix={"poetry": 1})
    with pytest.raises(ValueError, match="zero"):
        synthesize(catalogue, 5, mix={"single": 0})


def test_bad_catalogue_is_rejected_clearly():
    def cat(templates, values=None):
        tool = dict(WEATHER_OAI, **{"x-synth": {"templates": templates, "values": values or {}}})
        return {"tools": [tool]}
    Catalogue(cat(["Weather in {location}?"], {"location": {"pool": ["Oslo"]}}))
    with pytest.raises(CatalogueError, match="lacks required"):
        Catalogue(cat(["Weather in {unit}?"]))
    with pytest.raises(CatalogueError, match="not a parameter"):
        Catalogue(cat(["Weather in {location} on {date}?"], {"location": {"pool": ["Oslo"]}}))
    with pytest.raises(CatalogueError, match="no value generator"):
        Catalogue(cat(["Weather in {location}?"]))
    with pytest.raises(CatalogueError, match="fails its schema"):
        Catalogue(cat(["Weather in {location}, {days} days?"],
                      {"location": {"pool": ["Oslo"]}, "days": {"pool": [99]}}))
    with pytest.raises(CatalogueError, match="x-synth"):
        Catalogue({"tools": [WEATHER_OAI]})


# ------------------------------------------------------------------------------------------------ splits
def test_split_random_and_templates(big_synth):
    train, evals = split_examples(big_synth, 0.1, seed=3)
    assert (len(train), len(evals)) == (2700, 300)
    assert not {id(e) for e in train} & {id(e) for e in evals}
    assert split_examples(big_synth, 0.1, seed=3)[1] == evals
    train, evals = split_examples(big_synth, 0.1, seed=3, holdout="templates")
    assert len(train) + len(evals) == len(big_synth) and 100 < len(evals) < 600
    held = {t for e in evals for t in e.meta["templates"]}
    train_templates = {t for e in train for t in e.meta["templates"]}
    assert not {id(e) for e in train} & {id(e) for e in evals}
    assert any(t not in train_templates for t in held)
    # every eval example uses at least one template that train never shows
    assert all(set(e.meta["templates"]) - train_templates for e in evals)


def test_split_held_out_tools_never_seen_in_train(big_synth):
    train, evals = split_examples(big_synth, 0.15, seed=5, holdout="tools")
    assert evals and len(train) + len(evals) == len(big_synth)
    assert not {id(e) for e in train} & {id(e) for e in evals}
    held = {n for e in evals for n in e.called_tools} - {n for e in train for n in e.called_tools}
    assert held
    for e in train:
        assert not held & set(e.called_tools)
        assert not held & set(e.tool_names)  # not even offered as a distractor
        validate_example(e)
    for e in evals:
        assert held & set(e.called_tools)
    with pytest.raises(ValueError, match="holdout"):
        split_examples(big_synth, 0.1, holdout="users")


# ------------------------------------------------------------------------------------------- command line
def test_cli_synth_writes_both_files(tmp_path, capsys):
    out = tmp_path / "data"
    assert cli_main(["synth", "--out", str(out), "--n", "120", "--seed", "2", "--holdout", "tools"]) == 0
    printed = capsys.readouterr().out
    train = (out / "train.jsonl").read_text(encoding="utf-8").splitlines()
    evals = (out / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    assert train and evals and len(train) + len(evals) == 120
    assert f"wrote {len(train)} train and {len(evals)} eval" in printed
    assert "held-out tools:" in printed
    for obj in ("single", "parallel", "nested", "chat"):
        assert re.search(rf"^{obj}\s+\d+\s+\d+$", printed, re.M), obj
    examples, report = load_examples(out / "train.jsonl")
    assert (report.loaded, report.skipped) == (len(train), 0)
    assert examples[0].meta["template"]


def test_cli_synth_is_byte_identical_across_processes(tmp_path):
    outs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-m", "finetune", "synth", "--out", str(out), "--n", "150",
                        "--holdout", "templates"], cwd=REPO, env=env, check=True, capture_output=True)
        outs.append([(out / f).read_bytes() for f in ("train.jsonl", "eval.jsonl")])
    assert outs[0] == outs[1]


def test_cli_data_check(tmp_path, capsys):
    path = write_lines(tmp_path / "d.jsonl", [
        "{broken", {"user": "4!", "function_call": {"name": "math.factorial", "arguments": {"n": 4}},
                    "functions": [FACTORIAL]}])
    assert cli_main(["data-check", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "loaded 1, skipped 1" in printed and "line 1: bad JSON" in printed
    assert cli_main(["data-check", str(path), "--strict"]) == 1
    assert cli_main(["data-check", str(tmp_path / "nope.jsonl")]) == 2
    with pytest.raises(SystemExit):
        cli_main(["nope"])  # not a command: argparse refuses it
