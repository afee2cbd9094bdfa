"""The `constrained-fc` command: output on good input, one clear line and exit status 2 on bad input."""
import json
import subprocess
import sys

import pytest

from constrained_fc.cli import DEMO_TOOLS, main

GOOD = {"tools": DEMO_TOOLS}


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_grammar_prints_lark(tmp_path, capsys):
    f = tmp_path / "tools.json"
    f.write_text(json.dumps(DEMO_TOOLS))
    code, out, _ = run(["grammar", "--tools", str(f)], capsys)
    assert code == 0
    assert out.startswith("//") and "call_get_weather:" in out and 'start: "[TOOL_CALLS]" tool_calls' in out
    code, out, _ = run(["grammar", "--tools", str(f), "--format", "python", "--single"], capsys)
    assert code == 0 and 'tool_calls: "[" tool_call "]"' in out


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    ("{not json", "not valid JSON"),
    (json.dumps([{"name": "bad name", "parameters": {}}]), "bad name"),
    (json.dumps([{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}}]),
     "properties/x/type"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, needle):
    f = tmp_path / "tools.json"
    if content is not None:
        f.write_text(content)
    code, out, err = run(["grammar", "--tools", str(f)], capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("constrained-fc: error:")
    assert needle in err


def test_console_script_entry_point(tmp_path):
    f = tmp_path / "tools.json"
    f.write_text("[]")
    proc = subprocess.run([sys.executable, "-m", "constrained_fc.cli", "grammar", "--tools", str(f)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "empty" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.model
def test_call_prints_calls_as_json(tmp_path, capsys, smollm):
    f = tmp_path / "tools.json"
    f.write_text(json.dumps(DEMO_TOOLS))
    code, out, _ = run(["call", "--tools", str(f), "--prompt", "Convert 30 EUR to USD", "--tool-choice",
                        "convert_currency"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["finish_reason"] == "tool_calls"
    assert res["tool_calls"] and res["tool_calls"][0]["name"] == "convert_currency"
    assert res["tool_calls"][0]["error"] is None
