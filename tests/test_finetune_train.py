"""The training side of the fine-tuning package, on a tiny random Llama saved as a model folder: assistant masks,
truncation, a few LoRA steps in which the loss falls, checkpoints and --resume, merging (only the LoRA layers and
the five function-calling token rows change), loading the merged folder, and evaluate's scoring."""
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from finetune.__main__ import main as cli_main  # noqa: E402
from finetune.config import ConfigError, TrainConfig, build_config, save_config  # noqa: E402
from finetune.data import Example, RecordError, write_jsonl  # noqa: E402
from finetune.evaluate import EvalItem, aggregate, markdown, score, to_ground_truth  # noqa: E402
from finetune.synth import synthesize  # noqa: E402

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
               "required": ["city"]}}}
SEARCH = {"type": "function", "function": {"name": "search_flights", "description": "Find flights between two "
          "airports on a date, optionally in a cabin class, sorted by price or duration, with a passenger count.",
          "parameters": {"type": "object", "properties": {
              "origin": {"type": "string", "description": "IATA code of the departure airport"},
              "destination": {"type": "string", "description": "IATA code of the arrival airport"},
              "date": {"type": "string", "format": "date", "description": "Date in YYYY-MM-DD format"},
              "cabin": {"type": "string", "enum": ["economy", "premium", "business", "first"]},
              "passengers": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["origin", "destination", "date"]}}}


def call(cid, name, args):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def chat_example() -> Example:
    """Two exchanges, each with a call; the tools are listed in the first user message."""
    return Example(messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "get_weather", {"city": "Oslo"})]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 20}'},
        {"role": "assistant", "content": "It is 20 degrees in Oslo."},
        {"role": "user", "content": "And in Lima, in fahrenheit?"},
        {"role": "assistant", "content": "Checking.",
         "tool_calls": [call("c2", "get_weather", {"city": "Lima", "unit": "fahrenheit"})]},
        {"role": "tool", "tool_call_id": "c2", "content": '{"temp": 70}'},
        {"role": "assistant", "content": "70 °F in Lima."},
    ], tools=[WEATHER, SEARCH])


@pytest.fixture(scope="module")
def tok():
    from constrained_fc.model import load_default_tokenizer
    return load_default_tokenizer()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tok):
    """A 2-layer random Llama with tied embeddings over the SmolLM2 tokenizer, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny") / "model"
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------ assistant masks
def test_assistant_mask_covers_exactly_the_assistant_turns(tok):
    from constrained_fc.chat import render_prompt
    from finetune.train import encode_conversation, trained_turns

    ex = chat_example()
    trained = trained_turns(ex.messages, ex.tools)
    assert trained == [True, True, True, True]  # the tools are listed in the first user message, before any call
    ids, mask, ends = encode_conversation(tok, ex.messages, ex.tools)
    assert len(ids) == len(mask) and len(ends) == 4
    masked = tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False)
    assert masked == ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]<|im_end|>'
                      "It is 20 degrees in Oslo.<|im_end|>"
                      'Checking.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Lima", '
                      '"unit": "fahrenheit"}}]<|im_end|>'
                      "70 °F in Lima.<|im_end|>")
    # One contiguous run per trained turn, each ending at the recorded end.
    runs = [k for k in range(len(mask)) if mask[k] and (k == 0 or not mask[k - 1])]
    assert len(runs) == 4 and all(mask[e - 1] == 1 and (e == len(mask) or mask[e] == 0) for e in ends)
    unmasked = tok.decode([i for i, m in zip(ids, mask) if not m], skip_special_tokens=False)
    assert "Weather in Oslo?" in unmasked and "[AVAILABLE_TOOLS]" in unmasked and "And in Lima" in unmasked
    # Every trained turn starts exactly where generation starts on its own inference prompt: the piecewise
    # tokenization matches the decoder's, and each earlier prompt is a prefix of the conversation.
    assistant_at = [i for i, m in enumerate(ex.messages) if m["role"] == "assistant"]
    for turn, start in zip(assistant_at, runs):
        prompt = render_prompt(tok, ex.messages[:turn], ex.tools)
        assert ids[:start] == tok(prompt, add_special_tokens=False).input_ids


def test_a_call_before_the_tools_are_listed_is_not_trained():
    from finetune.train import trained_turns

    msgs = [{"role": "system", "content": "s"},
            {"role": "assistant", "content": None, "tool_calls": [call("c0", "get_weather", {"city": "Oslo"})]},
            {"role": "tool", "tool_call_id": "c0", "content": "{}"},
            {"role": "user", "content": "Weather in Lima?"},
            {"role": "assistant", "content": None, "tool_calls": [call("c1", "get_weather", {"city": "Lima"})]}]
    assert trained_turns(msgs, [WEATHER]) == [False, True]
    assert trained_turns(msgs, []) == [True, True]  # no tools offered: nothing is listed late


def test_a_run_can_keep_the_mistral_layout(tok):
    """`tools_in: last` (the shipped recipe): the tools block in the last user message, so the first exchange's
    call comes before the tools are listed and stays out of the loss."""
    import copy
    from constrained_fc.chat import chat_template, tools_layout
    from finetune.train import encode_conversation, trained_turns

    ex = chat_example()
    last = copy.deepcopy(tok)
    last.chat_template = chat_template("last")
    assert (tools_layout(tok), tools_layout(last)) == ("first", "last")
    assert trained_turns(ex.messages, ex.tools, "last") == [False, True, True, True]
    ids, mask, ends = encode_conversation(last, ex.messages, ex.tools)
    masked = last.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False)
    assert len(ends) == 3 and '"city": "Oslo"' not in masked and masked.startswith("It is 20 degrees")
    # An older template of ours, from before the layout was named, listed the tools in the last user message.
    legacy = copy.deepcopy(tok)
    legacy.chat_template = chat_template("last").replace("the tools block in the last user message", "")
    assert tools_layout(legacy) == "last"
    legacy.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert tools_layout(legacy) is None
    with pytest.raises(ConfigError, match="tools_in"):
        build_config({"data": "x", "out": "y", "tools_in": "middle"}).validate()


def test_mask_on_a_single_call_and_on_plain_chat(tok):
    from finetune.train import encode_conversation

    msgs = [{"role": "user", "content": "Flights from OSL to LIM on 2025-05-01"},
            {"role": "assistant", "content": None, "tool_calls": [
                call("c1", "search_flights", {"origin": "OSL", "destination": "LIM", "date": "2025-05-01"})]}]
    ids, mask, _ = encode_conversation(tok, msgs, [WEATHER, SEARCH])
    assert tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False) == (
        '[TOOL_CALLS][{"name": "search_flights", "arguments": {"origin": "OSL", "destination": "LIM", '
        '"date": "2025-05-01"}}]<|im_end|>')
    ids, mask, _ = encode_conversation(tok, [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "Hello!"}], [])
    assert tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False) == "Hello!<|im_end|>"


def test_long_conversations_lose_distractors_then_turns(tok):
    from finetune.train import build_features, encode_conversation

    ex = chat_example()
    full, _, ends = encode_conversation(tok, ex.messages, ex.tools)
    without_search, _, _ = encode_conversation(tok, ex.messages, [WEATHER])
    f = build_features(ex, tok, len(without_search))  # fits once the distractor is gone
    assert f.dropped_tools == 1 and f.cut_turns == 0 and len(f.input_ids) == len(without_search)
    assert "search_flights" not in tok.decode(f.input_ids)
    # Shorter still: the conversation is cut after the last trained turn that fits.
    _, _, ends_small = encode_conversation(tok, ex.messages, [WEATHER])
    f = build_features(ex, tok, ends_small[-1] - 1)
    assert f.cut_turns == 1 and len(f.input_ids) == ends_small[-2] and f.assistant_masks[-1] == 1
    with pytest.raises(RecordError) as e:
        build_features(ex, tok, ends_small[0] - 1)
    assert e.value.kind == "too_long"
    assert len(full) > len(without_search)


# ------------------------------------------------------------------------------------------------- config
def test_config_precedence_and_errors(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 0.001\nmax-steps: 7\nlora_r: 4\n")
    c = build_config({"data": "d.jsonl", "out": str(tmp_path / "o"), "max_steps": 9}, cfg_file)
    assert (c.lr, c.max_steps, c.lora_r, c.grad_accum) == (0.001, 9, 4, TrainConfig().grad_accum)
    # With --resume, the run's own train_config.json sits between the defaults and the file.
    (tmp_path / "o").mkdir()
    save_config(TrainConfig(data="d.jsonl", out=str(tmp_path / "o"), lora_alpha=8, lr=0.5), tmp_path / "o")
    c = build_config({"out": str(tmp_path / "o"), "resume": True}, cfg_file)
    assert (c.lora_alpha, c.lr, c.data, c.resume) == (8, 0.001, "d.jsonl", True)
    cfg_file.write_text("learning_rate: 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        build_config({}, cfg_file)
    with pytest.raises(ConfigError, match="max_steps"):
        build_config({"data": "x", "out": "y", "max_steps": 0}).validate()
    with pytest.raises(ConfigError, match="wrong type"):
        build_config({"lr": "fast"})


# --------------------------------------------------------------------------------- train, resume, merge
def test_train_resume_merge_and_load(tmp_path, tiny_dir, tok):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from constrained_fc.chat import FC_TOKENS
    from constrained_fc.model import load_model
    from finetune.merge import merge_adapter

    data = tmp_path / "train.jsonl"
    write_jsonl(synthesize(n=24, seed=3), data)
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--model", str(tiny_dir), "--max-steps", "10",
              "--lr", "0.02", "--batch-size", "2", "--grad-accum", "1", "--max-length", "512",
              "--max-examples", "6", "--save-steps", "4", "--threads", "1", "--warmup", "0", "--no-bf16",
              "--lora-dropout", "0", "--token-lr", "0.05", "--tools-in", "last"]
    # A time budget that runs out after the first step: the run stops there, with a checkpoint.
    assert cli_main(["train", *common, "--max-minutes", "0.00001"]) == 0
    log1 = json.loads((out / "train_log.json").read_text())
    assert log1["summary"]["stopped_by_time_budget"] and log1["summary"]["global_step"] == 1
    assert (out / "checkpoint-1").is_dir()
    # --resume continues from it to max_steps.
    assert cli_main(["train", *common, "--max-minutes", "0", "--resume"]) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["summary"]["resumed_from"].endswith("checkpoint-1") and log["summary"]["steps_this_run"] == 9
    losses = [s["loss"] for s in log["steps"]]
    assert [s["step"] for s in log["steps"]] == list(range(1, 11))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the loss falls
    assert (out / "loss.png").stat().st_size > 0 and (out / "checkpoint-8").is_dir()
    # The run rendered its conversations with the layout it was given, and keeps it with its tokenizer.
    from transformers import AutoTokenizer
    from constrained_fc.chat import tools_layout
    assert json.loads((out / "train_config.json").read_text())["tools_in"] == "last"
    assert tools_layout(AutoTokenizer.from_pretrained(str(out))) == "last"
    # Only LoRA matrices and the function-calling token rows were trainable, the rows at their own rate.
    assert set(log["trainable_parameters"]["names"]) == {"lora_A", "lora_B", "trainable_tokens_delta"}
    groups = log["optimizer_groups"]
    assert {"lr": 0.05, "weight_decay": 0.0, "parameters": len(FC_TOKENS) * 64} in groups
    assert sum(g["parameters"] for g in groups) == log["trainable_parameters"]["trainable"]
    assert all(g["lr"] == 0.02 for g in groups if g["lr"] != 0.05)
    adapter = load_file(out / "adapter_model.safetensors")
    assert all("lora_" in k or "trainable_tokens" in k for k in adapter)
    assert all(v.shape[0] == len(FC_TOKENS) for k, v in adapter.items() if "trainable_tokens" in k)

    # The adapter loads onto its base, and merges into a folder that load_model reads directly.
    base, _ = load_model(str(tiny_dir))
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = PeftModel.from_pretrained(load_model(str(tiny_dir))[0], str(out)).eval()
    merged_dir = tmp_path / "merged"
    assert cli_main(["merge", "--adapter", str(out), "--out", str(merged_dir)]) == 0
    assert merge_adapter(out, tmp_path / "merged2").is_dir()
    merged, mtok = load_model(str(merged_dir))
    assert [mtok.convert_tokens_to_ids(t) for t in FC_TOKENS] == [tok.convert_tokens_to_ids(t) for t in FC_TOKENS]
    assert mtok.chat_template == tok.chat_template

    ids = torch.tensor([tok("[TOOL_CALLS] hello [AVAILABLE_TOOLS] x").input_ids])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft_model(ids).logits, atol=1e-4)
        assert not torch.allclose(merged(ids).logits, base(ids).logits, atol=1e-4)

    fc_ids = [tok.convert_tokens_to_ids(t) for t in FC_TOKENS]
    emb_before, emb_after = base_state["model.embed_tokens.weight"], merged.get_input_embeddings().weight
    others = torch.ones(emb_before.shape[0], dtype=torch.bool)
    others[fc_ids] = False
    assert torch.equal(emb_before[others], emb_after[others])  # every other row is untouched
    assert all(not torch.equal(emb_before[i], emb_after[i]) for i in fc_ids)  # the five rows moved
    assert merged.get_output_embeddings().weight.data_ptr() == emb_after.data_ptr()  # still tied
    merged_state = merged.state_dict()
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for name, before in base_state.items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            continue
        if any(f".{t}." in name for t in lora_targets):
            assert not torch.equal(before, merged_state[name]), name  # LoRA deltas were merged in
        else:
            assert torch.equal(before, merged_state[name]), name  # norms etc. never change


def test_train_rejects_bad_setups(tmp_path):
    from finetune.train import train

    with pytest.raises(ConfigError, match="no checkpoint"):
        train(TrainConfig(data="x.jsonl", out=str(tmp_path / "new"), resume=True))
    assert cli_main(["train", "--out", str(tmp_path / "o")]) == 2  # no data


# ------------------------------------------------------------------------------------------------ evaluate
def test_scoring_hand_made_records():
    gold = [{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}]
    assert to_ground_truth(gold) == [{"get_weather": {"city": ["Oslo"], "unit": ["celsius"]}}]
    tools = [WEATHER, SEARCH]
    one = EvalItem("heldout", "a", [], tools, to_ground_truth(gold), "multiple")
    two = EvalItem("heldout", "b", [], tools, to_ground_truth([
        ("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Lima"})]), "parallel_multiple")
    text = EvalItem("heldout", "c", [], tools, [], "irrelevance")

    right = score(one, [("get_weather", {"city": "oslo", "unit": "celsius"})])  # BFCL string normalisation
    assert right["decision_ok"] and right["call_ok"] and right["turn_ok"] and right["invalid"] == [None]
    wrong = score(one, [{"name": "get_weather", "arguments": '{"city": "Bergen", "unit": "celsius"}'}])
    assert wrong["decision_ok"] and not wrong["call_ok"] and wrong["reason"].startswith("wrong_value")
    missed = score(one, None)
    assert not missed["decision_ok"] and missed["call_ok"] is False and missed["invalid"] == []
    swapped = score(two, [("get_weather", {"city": "Lima"}), ("get_weather", {"city": "Oslo"})])
    assert swapped["call_ok"]  # parallel calls match in any order
    hallucinated = score(text, [("book_taxi", {"to": "airport"}), ("get_weather", {"city": 5})])
    assert not hallucinated["decision_ok"] and hallucinated["call_ok"] is None and not hallucinated["turn_ok"]
    assert hallucinated["invalid"] == ["unknown_function", "schema_violation"]
    quiet = score(text, [])
    assert quiet["decision_ok"] and quiet["turn_ok"] and quiet["call_ok"] is None

    m = aggregate([right, wrong, missed, swapped, hallucinated, quiet])
    assert (m["n"], m["n_call_turns"], m["n_text_turns"]) == (6, 4, 2)
    assert m["decision_accuracy"] == round(4 / 6, 4)
    assert m["call_accuracy"] == 0.5  # right and swapped, of four call turns
    assert m["turn_accuracy"] == 0.5  # right, swapped, quiet
    assert (m["calls"], m["invalid_calls"], m["invalid_call_rate"]) == (6, 2, round(2 / 6, 4))
    assert m["invalid_kinds"] == {"schema_violation": 1, "unknown_function": 1}
    assert m["calls_on_text_turns"] == 0.5 and m["missed_call_turns"] == 0.25

    results = {"settings": {"limit": 6, "max_new_tokens": 8, "dtype": "float32", "retention_tokens": 8},
               "models": [{"label": "base", "metrics": {"heldout": {"constrained": aggregate([missed, quiet])}},
                           "retention": {"n": 2, "reference_nll": 1.0, "exact_agreement": 1.0,
                                         "prefix_agreement": 1.0}},
                          {"label": "tuned", "metrics": {"heldout": {"constrained": m}},
                           "retention": {"n": 2, "reference_nll": 1.2, "exact_agreement": 0.5,
                                         "prefix_agreement": 0.75}}]}
    md = markdown(results)
    assert "| held-out split | constrained | 6 (4/2) | 0.50 → 0.67 | 0.00 → 0.50 | – (0 calls) → 0.33 (2/6)" in md
    assert "| `tuned` | 1.200 (+20.0%) | 0.50 | 0.75 |" in md  # the rise over the reference model's own NLL


def test_evaluate_cli_on_a_tiny_model(tmp_path, tiny_dir):
    data = tmp_path / "eval.jsonl"
    write_jsonl([chat_example()], data)
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--model", str(tiny_dir), "--model", str(tiny_dir), "--label", "a", "--label", "b",
                     "--eval", str(data), "--limit", "4", "--max-new-tokens", "6", "--retention", "2",
                     "--threads", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [m["label"] for m in results["models"]] == ["a", "b"] and results["sets"] == {"heldout": 4}
    a, b = (m["metrics"]["heldout"] for m in results["models"])
    assert a == b  # the same model twice scores the same
    assert (a["unconstrained"]["n_call_turns"], a["unconstrained"]["n_text_turns"]) == (2, 2)
    r = results["models"][1]["retention"]
    assert r["exact_agreement"] == 1.0 and r["n"] == 2
    assert results["models"][0]["retention"]["reference_nll"] == pytest.approx(r["reference_nll"], abs=1e-4)
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 4 * 2 and "→" in (out / "results.md").read_text()
    # A later run against the saved results as the baseline.
    out2 = tmp_path / "eval2"
    assert cli_main(["evaluate", "--model", str(tiny_dir), "--baseline", str(out / "results.json"), "--eval",
                     str(data), "--limit", "4", "--max-new-tokens", "6", "--retention", "2", "--threads", "1",
                     "--out", str(out2), "--modes", "constrained"]) == 0
    again = json.loads((out2 / "results.json").read_text())
    assert len(again["models"]) == 2 and again["models"][1]["retention"]["exact_agreement"] == 1.0
