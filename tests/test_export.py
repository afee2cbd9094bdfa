"""The grammar exported for vLLM / SGLang / llama.cpp is accepted by both backends those servers use
(llguidance and xgrammar), and on BFCL's ground-truth calls both accept what ours accepts and reject a wrong
tool name and an invented parameter."""
import json
import subprocess
import sys

import llguidance
import pytest

import constrained_fc as cf
from constrained_fc.eval.data import load_bfcl
from constrained_fc.compiler.export import engine_lark, export_grammar
from constrained_fc.runtime.matcher import ll_tokenizer

xgrammar = pytest.importorskip("xgrammar")

PER_CATEGORY = 40


@pytest.fixture(scope="module")
def engines(tokenizer):
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    return ll_tokenizer(tokenizer), info, xgrammar.GrammarCompiler(info)


def _first_values(gt: dict) -> dict:
    (name, params), = gt.items()
    return name, {k: v[0] for k, v in params.items() if v and v[0] != ""}


def _ids(tok, grammar, text):
    trigger = tok.convert_tokens_to_ids(grammar.trigger)
    return [trigger] + tok.encode(text[len(grammar.trigger):], add_special_tokens=False)


def _llg(lltok, lark_text, ids) -> bool:
    m = llguidance.LLMatcher(lltok, lark_text, log_level=0)
    assert not m.is_error(), m.get_error()
    return m.consume_tokens(ids) and m.is_accepting()


def _xgr(compiler, tok, lark_text, ids) -> bool:
    m = xgrammar.GrammarMatcher(compiler.compile_grammar(xgrammar.Grammar.from_lark(lark_text)))
    return all(m.accept_token(i) for i in ids) and m.accept_token(tok.eos_token_id)


def _cases():
    out = []
    for category in ("simple", "multiple", "parallel", "parallel_multiple"):
        out += load_bfcl(category, limit=PER_CATEGORY)
    return out


def test_bfcl_ground_truth_agrees_across_engines(tokenizer, engines):
    lltok, _, compiler = engines
    checked = 0
    for case in _cases():
        grammar = cf.compile_tools(case.functions, warn=False)
        calls = [cf.ToolCall(*_first_values(gt)) for gt in case.ground_truth]
        try:
            text = grammar.render(calls)
        except ValueError:
            continue  # a ground-truth value outside its own schema (BFCL has a few): nothing to compare
        exported = engine_lark(grammar, tokenizer)
        ids = _ids(tokenizer, grammar, text)
        assert grammar.accepts(text), case.id
        assert _llg(lltok, exported, ids), case.id
        assert _xgr(compiler, tokenizer, exported, ids), case.id
        wrong_name = text.replace(json.dumps(calls[0].name), '"not_a_real_tool"', 1)
        invented = text.replace('"arguments": {', '"arguments": {"invented_param": 1, ', 1)
        for bad in (wrong_name, invented):
            bad_ids = _ids(tokenizer, grammar, bad)
            assert not grammar.accepts(bad), (case.id, bad)
            assert not _llg(lltok, exported, bad_ids), (case.id, bad)
            assert not _xgr(compiler, tokenizer, exported, bad_ids), (case.id, bad)
        checked += 1
    assert checked >= 0.9 * 4 * PER_CATEGORY


def test_fragments(tokenizer):
    tools = load_bfcl("simple", limit=1)[0].functions
    v = export_grammar(tools, "vllm", tokenizer)
    assert v["extra_body"]["structured_outputs"]["grammar"] == v["grammar"] == v["extra_body_before_0_12"][
        "guided_grammar"]
    assert "<[" in v["grammar"] and '"[TOOL_CALLS]"' not in v["grammar"]
    s = export_grammar(tools, "sglang", tokenizer)
    assert s["extra_body"]["ebnf"] == s["grammar"]
    # The engine's call parser comes from the format: ours by default, the format's own otherwise.
    assert v["server_flags"][-2:] == ["--tool-call-parser", "mistral"]
    assert s["server_flags"] == ["--grammar-backend", "llguidance", "--tool-call-parser", "mistral"]
    py = export_grammar(tools, "vllm", tokenizer, format="python")
    assert py["server_flags"][-1] == "pythonic" and py["grammar"] == cf.compile_tools(tools, format="python", warn=False).lark
    ll = export_grammar(tools, "llama.cpp", tokenizer)
    body = ll["extra_body"]
    assert body["grammar"].startswith("%llguidance {}\n") and body["grammar_lazy"] is True
    assert body["grammar_triggers"][0]["token"] == tokenizer.convert_tokens_to_ids("[TOOL_CALLS]")
    assert llguidance.LLMatcher.validate_grammar(body["grammar"], ll_tokenizer(tokenizer)) == ""
    with pytest.raises(cf.ConstrainedFCError, match="engine must be"):
        export_grammar(tools, "tgi", tokenizer)


def test_cli_engine_flag(tmp_path):
    f = tmp_path / "tools.json"
    f.write_text(json.dumps(load_bfcl("simple", limit=1)[0].functions))
    p = subprocess.run([sys.executable, "-m", "constrained_fc.cli", "grammar", "--tools", str(f), "--engine",
                        "vllm"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "structured_outputs" in json.loads(p.stdout)["extra_body"]
