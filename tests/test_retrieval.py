"""Tool retrieval (`constrained_fc.retrieval`): ranking, the on-disk embedding cache, what a turn is offered,
bad input, and `retrieve=k` through generate, the agent, the CLI and the server. The embedder is the real
packaged all-MiniLM-L6-v2."""
import json
import warnings

import numpy as np
import pytest

from constrained_fc import ConstrainedFCError, ToolSchemaError
from constrained_fc.eval.data import load_bfcl
from constrained_fc.retrieval import (Embedder, EmbeddingStore, ToolIndex, ToolIndexError, asks, called_tools,
                                      default_embedder, offer_tools, request_text, select_tools,
                                      tool_text)


def _library() -> list[dict]:
    """Every distinct function (by name) of BFCL simple and multiple: about 600 tools."""
    seen = {}
    for cat in ("simple", "multiple"):
        for case in load_bfcl(cat):
            for fn in case.functions:
                seen.setdefault(fn["name"], fn)
    return list(seen.values())


@pytest.fixture(scope="module")
def library():
    return _library()


@pytest.fixture(scope="module")
def index(library):
    return ToolIndex(library, progress=False)


def _tool(name, description="", **props):
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": {k: {"type": "string", "description": v}
                                                            for k, v in props.items()}}}


SMALL = [
    _tool("get_weather", "Current weather and forecast for a city", city="City name"),
    _tool("convert_currency", "Convert an amount of money between currencies", amount="Amount", to="Currency"),
    _tool("send_email", "Send an email message to a recipient", to="Address", body="Text"),
    _tool("play_music", "Play a song or playlist on the speaker", song="Song title"),
    _tool("set_thermostat", "Set the home thermostat temperature", celsius="Target temperature"),
]


def test_recall_on_bfcl_questions_hidden_in_the_library(index):
    # Each question's own function among ~600: the hybrid ranking must find most of them in its top 5.
    cases = load_bfcl("simple", limit=60)
    hits = 0
    for case in cases:
        names = {h.tool.name for h in index.search(request_text(case.messages), 5)}
        hits += case.functions[0]["name"] in names
    assert hits / len(cases) >= 0.85


def test_hybrid_is_at_least_as_good_as_either_half(library, index):
    lexical = ToolIndex(library, dense=False)
    cases = load_bfcl("multiple", limit=60)

    def recall(ix):
        got = 0
        for case in cases:
            want = next(iter(case.ground_truth[0]))
            got += want in {h.tool.name for h in ix.search(request_text(case.messages), 3)}
        return got

    assert recall(index) >= recall(lexical)


def test_asks_splits_a_request_into_its_separate_asks():
    assert asks("What is the weather in Paris, and play some jazz on the speaker.") == [
        "What is the weather in Paris", "play some jazz on the speaker."]
    assert asks("Book a table for two. Then send an email to Ann about it.") == [
        "Book a table for two.", "Then send an email to Ann about it."]
    assert asks("Find the area of a triangle with base 10 and height 5") == []  # one ask
    fragment = "Find the area of a triangle with a base of 10 units and height of 5 units."
    assert asks(fragment) == ["Find the area of a triangle with a base of 10 units", "height of 5 units."]
    assert asks(fragment, strict=True) == []  # for relevance, "height of 5 units." is not an ask of its own
    two = "Book a table for two at eight tonight and send the invitation to Anna by email."
    assert asks(two, strict=True) == ["Book a table for two at eight tonight",
                                      "send the invitation to Anna by email."]
    assert asks("Book a table. Then send an email to Ann about it.", strict=True) == [
        "Book a table.", "Then send an email to Ann about it."]
    assert asks("") == []


def test_a_request_with_several_asks_finds_the_tool_of_each():
    # Seal-Tools requests that call two or more tools, hidden among the tools of the first 300 requests:
    # embedding each ask as well as the whole request must find more of the called tools in the top 5.
    from constrained_fc.compiler.tools import NAME_RE
    from finetune.sources import load_sealtools, public_tool, sealtools_tools

    known = sealtools_tools()
    requests, _ = load_sealtools("dev", tools=known)
    # A few Seal-Tools names hold spaces, which no tool name may (normalize_tools refuses them).
    requests = [ex for ex in requests[:300] if all(NAME_RE.fullmatch(n) for n in ex.called_tools)]
    names = sorted({n for ex in requests for n in ex.called_tools})
    ix = ToolIndex([public_tool(known[n]) for n in names], progress=False)
    multi = [ex for ex in requests if len(set(ex.called_tools)) > 1][:40]
    assert len(multi) >= 30

    def recall(split):
        got = []
        for ex in multi:
            top = np.argsort(-ix.scores(request_text(ex.messages), split=split)[0], kind="stable")[:5]
            want = set(ex.called_tools)
            got.append(len(want & {ix.names[i] for i in top}) / len(want))
        return float(np.mean(got))

    whole, split = recall(False), recall(True)
    assert split > whole and split >= 0.8, (whole, split)


def test_clear_requests_rank_the_right_tool_first():
    ix = ToolIndex(SMALL, progress=False)
    assert ix.search("Will it rain in Lisbon tomorrow?", 1)[0].tool.name == "get_weather"
    assert ix.search("How many yen is 30 euros", 1)[0].tool.name == "convert_currency"
    assert ix.search("Put on some jazz", 1)[0].tool.name == "play_music"
    hit = ix.search("make the living room warmer", 2)
    assert hit[0].tool.name == "set_thermostat" and hit[0].dense is not None and 0 <= hit[0].score <= 1


def test_embeddings_are_cached_on_disk_and_only_new_tools_are_embedded(tmp_path):
    class Counting(Embedder):
        encoded = 0

        def encode(self, texts, **kw):
            Counting.encoded += len(texts)
            return super().encode(texts, **kw)

    emb = Counting()
    store = EmbeddingStore(tmp_path / "vectors.sqlite")
    first = ToolIndex(SMALL, embedder=emb, store=store)
    assert Counting.encoded == len(SMALL)
    again = ToolIndex(SMALL, embedder=emb, store=store)
    assert Counting.encoded == len(SMALL)  # all from disk
    np.testing.assert_allclose(first.vectors, again.vectors)
    grown = ToolIndex(SMALL + [_tool("book_taxi", "Order a taxi to an address", to="Address")],
                      embedder=emb, store=store)
    assert Counting.encoded == len(SMALL) + 1
    np.testing.assert_allclose(grown.vectors[:len(SMALL)], first.vectors)
    # A changed description is a different text, so it is embedded afresh (not served a stale vector).
    changed = [dict(SMALL[0], description="Air quality index for a city")] + SMALL[1:]
    ToolIndex(changed, embedder=emb, store=store)
    assert Counting.encoded == len(SMALL) + 2


def test_an_unwritable_cache_costs_speed_not_correctness(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ix = ToolIndex(SMALL, store=EmbeddingStore(blocker / "vectors.sqlite"))
    assert ix.search("send a mail to Bob", 1)[0].tool.name == "send_email"
    assert any("cache" in str(w.message) for w in seen)


def test_select_keeps_called_tools_and_the_named_tool_in_library_order():
    ix = ToolIndex(SMALL, progress=False)
    messages = [
        {"role": "user", "content": "what's the weather in Oslo"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "play_music", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "user", "content": "and will it snow in Oslo?"},
    ]
    assert called_tools(messages) == ["play_music"]
    assert request_text(messages) == "and will it snow in Oslo?"
    names = [t.name for t in ix.select(messages, 1)]
    assert names == ["get_weather", "play_music"]  # library order, the called tool kept
    names = [t.name for t in ix.select(messages, 1, tool_choice={"type": "function",
                                                                 "function": {"name": "send_email"}})]
    assert names == ["get_weather", "send_email", "play_music"]
    with pytest.raises(ConstrainedFCError, match="nope"):
        ix.select(messages, 1, tool_choice="nope")


def test_select_tools_rules():
    msgs = [{"role": "user", "content": "weather in Rome"}]
    assert select_tools(SMALL, msgs, None) is SMALL
    assert select_tools(SMALL, msgs, 10) is SMALL  # a library no larger than k is offered whole
    assert [t.name for t in select_tools(SMALL, msgs, 2)][0] == "get_weather"
    for bad in (0, -1, True, "3"):
        with pytest.raises(ConstrainedFCError, match="retrieve"):
            select_tools(SMALL, msgs, bad)


def test_an_offer_carries_the_ranking_as_a_name_prior():
    msgs = [{"role": "user", "content": "weather in Rome"}]
    offer = ToolIndex(SMALL, prior_weight=4.0, progress=False).offer(msgs, 2)
    assert set(offer.name_prior) == {t.name for t in offer.tools} and len(offer.tools) == 2
    assert offer.name_prior["get_weather"] == 0.0  # the best tool; the other is below it, by at most the weight
    assert all(-4.0 <= p < 0 for n, p in offer.name_prior.items() if n != "get_weather")
    assert ToolIndex(SMALL, prior_weight=0, progress=False).offer(msgs, 2).name_prior == {}
    assert offer_tools(SMALL, msgs, 10).name_prior == {}  # nothing ranked: nothing to steer by
    for bad in (-1, "2", True):
        with pytest.raises(ToolIndexError, match="prior_weight"):
            ToolIndex(SMALL, prior_weight=bad, progress=False)


def test_the_best_tool_of_each_ask_is_relevant():
    # One ask: only its best tool scores 0. Two asks: the best tool of each does, so a second call to it is
    # not pushed away; a tool neither ask wants stays below.
    index = ToolIndex(SMALL, progress=False)
    one = index.relevance("What is the weather in Rome tomorrow?")
    assert one[index.names.index("get_weather")] == 0 and int((one == 0).sum()) == 1
    two = index.relevance("What is the weather in Rome tomorrow, and play the song Yesterday on the speaker.")
    assert two[index.names.index("get_weather")] == 0 and two[index.names.index("play_music")] == 0
    assert two[index.names.index("convert_currency")] < 0 and two[index.names.index("send_email")] < 0
    offer = index.offer([{"role": "user", "content": "What is the weather in Rome tomorrow, and play the song "
                                                     "Yesterday on the speaker."}], 3)
    assert offer.name_prior["get_weather"] == offer.name_prior["play_music"] == 0.0
    assert offer.asks == 2  # two different tools expected in one call list (runtime.session.BEYOND_ASKS_LOGITS)
    assert index.offer([{"role": "user", "content": "What is the weather in Rome and in Paris tomorrow?"}], 3).asks == 1


def test_duplicate_names_are_an_error_naming_the_tool():
    with pytest.raises(ToolSchemaError, match="send_email") as e:
        ToolIndex(SMALL + [_tool("send_email", "another")])
    assert "duplicate" in str(e.value)


def test_tools_without_descriptions_are_ranked_by_name_and_parameters():
    bare = [_tool("get_stock_price", ticker="x"), _tool("translate_text", target_language="x"),
            _tool("reserve_table", party_size="x")]
    with pytest.warns(UserWarning, match="3 of 3 tools have no description"):
        ix = ToolIndex(bare)
    assert "Translate" not in tool_text(ix.tools[1]) and "target language" in tool_text(ix.tools[1])
    assert ix.search("translate this into French", 1)[0].tool.name == "translate_text"
    assert ix.search("stock price of ACME", 1)[0].tool.name == "get_stock_price"


def test_a_library_too_large_for_memory_is_refused_with_the_figures():
    with pytest.raises(ToolIndexError, match=r"5 tools needs 0\.0 MiB .*384 float32.*max_memory"):
        ToolIndex(SMALL, max_memory=1000)
    assert ToolIndex(SMALL, dense=False, max_memory=1000).search("email Bob", 1)[0].tool.name == "send_email"


@pytest.mark.parametrize("query", ["明天巴黎会下雨吗", "Завтра в Москве будет дождь?", "", "the and of", "🙂🙂",
                                   "x" * 5000])
def test_queries_the_embedder_cannot_read_fall_back_to_bm25(query):
    ix = ToolIndex(SMALL, progress=False)
    hits = ix.search(query, 3)
    assert len(hits) == 3
    if query and any(c.isalpha() and ord(c) > 0x250 for c in query):
        assert all(h.dense is None for h in hits)


def test_a_non_latin_request_still_matches_words_it_shares_with_a_tool():
    tools = SMALL + [_tool("wetter_vorhersage", "Wettervorhersage für eine Stadt", stadt="Stadt")]
    ix = ToolIndex(tools, progress=False)
    # Greek script, one Latin product word: BM25 finds the shared word though the embedder is skipped.
    hits = ix.search("παίξε το τραγούδι στο ηχείο, play_music", 1)
    assert hits[0].tool.name == "play_music" and hits[0].dense is None


def test_the_embedder_is_shared():
    assert default_embedder() is default_embedder()


# --------------------------------------------------------------------------- through the product (real model)

@pytest.mark.model
def test_generate_with_retrieve_calls_the_right_tool_from_the_library(smollm, library):
    from constrained_fc import generate
    from constrained_fc.runtime.plan import _compile_cached
    model, tok = smollm
    case = load_bfcl("simple", limit=1)[0]  # the triangle-area question
    res = generate(model, tok, case.messages, library, retrieve=3)
    assert len(res.retrieved_tools) == 3 and "calculate_triangle_area" in res.retrieved_tools
    assert res.tool_calls and all(c.valid for c in res.tool_calls)
    assert {c.name for c in res.tool_calls} <= set(res.retrieved_tools)
    assert res.stats.prompt_tokens < 800  # three tools' worth, not the library's 100k tokens
    hits = _compile_cached.cache_info().hits
    again = generate(model, tok, case.messages, library, retrieve=3)
    assert again.retrieved_tools == res.retrieved_tools
    assert _compile_cached.cache_info().hits > hits  # the same set compiles once


@pytest.mark.model
def test_the_ranking_steers_the_model_away_from_a_near_twin(smollm, library):
    # BFCL simple_3 asks for the roots of a quadratic; the library also holds `solve_quadratic`, and the model
    # left to itself names that twin. With the ranking as a prior (the default) it names the right tool.
    from constrained_fc import generate
    model, tok = smollm
    case = load_bfcl("simple")[3]
    alone = generate(model, tok, case.messages, ToolIndex(library, prior_weight=0, progress=False), retrieve=3)
    steered = generate(model, tok, case.messages, library, retrieve=3)
    assert alone.retrieved_tools == steered.retrieved_tools
    assert {"algebra.quadratic_roots", "solve_quadratic"} <= set(steered.retrieved_tools)
    assert [c.name for c in alone.tool_calls][:1] == ["solve_quadratic"]
    assert [c.name for c in steered.tool_calls] == ["algebra.quadratic_roots"]
    assert all(c.valid for c in steered.tool_calls)


@pytest.mark.model
@pytest.mark.parametrize("question", [48, 60])
def test_the_ranking_stops_a_second_call_to_a_tool_nobody_asked_for(smollm, library, question):
    # BFCL simple_48 asks for a density, simple_60 for a mutation type: one call each. Left to itself, the model
    # goes on to call a second offered tool (entropy_change.calculate, analyze_dna_sequence). With the ranking
    # as a prior that next call is pushed to a repeat of the first, which the duplicate rule drops.
    from constrained_fc import generate
    model, tok = smollm
    case = load_bfcl("simple")[question]
    want = next(iter(case.ground_truth[0]))
    alone = generate(model, tok, case.messages, ToolIndex(library, prior_weight=0, progress=False), retrieve=3)
    steered = generate(model, tok, case.messages, library, retrieve=3)
    assert [c.name for c in alone.tool_calls][0] == want and len(alone.tool_calls) == 2
    assert [c.name for c in steered.tool_calls] == [want] and steered.tool_calls[0].valid
    assert steered.stats.duplicates_dropped == 1


@pytest.mark.model
def test_agent_with_retrieve_keeps_the_called_tool(smollm):
    from constrained_fc import run_agent
    model, tok = smollm
    library = SMALL + [_tool(f"noise_{i}", f"Unrelated utility number {i}", x="x") for i in range(40)]
    seen = []

    def get_weather(city):
        seen.append(city)
        return {"city": city, "forecast": "sunny", "celsius": 21}

    functions = {t["name"]: (get_weather if t["name"] == "get_weather" else (lambda **kw: "ok")) for t in library}
    res = run_agent(model, tok, [{"role": "user", "content": "What is the weather in Paris?"}], library,
                    functions, retrieve=2, max_steps=2, max_new_tokens=64)
    first = res.steps[0].result
    assert "get_weather" in first.retrieved_tools and len(first.retrieved_tools) == 2
    assert seen and first.tool_calls[0].name == "get_weather"
    if len(res.steps) > 1:
        assert "get_weather" in res.steps[1].result.retrieved_tools


@pytest.mark.model
def test_cli_call_with_retrieve(tmp_path, library, capsys):
    from constrained_fc.cli import main
    path = tmp_path / "library.json"
    path.write_text(json.dumps(library))
    rc = main(["call", "--tools", str(path), "--retrieve", "3", "--max-new-tokens", "48",
               "--prompt", "Find the area of a triangle with a base of 10 units and height of 5 units."])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(out["retrieved_tools"]) == 3
    assert all(c["name"] in out["retrieved_tools"] and c["error"] is None for c in out["tool_calls"])
    with pytest.raises(SystemExit):
        main(["call", "--tools", str(path), "--retrieve", "0", "--prompt", "x"])


def test_near_twins_are_not_offered_together():
    # Two near-copies of the weather tool beside it: by relevance alone they fill the top 3 and the request's
    # other ask is left out; with enough diversity maximal marginal relevance offers one of them and the music
    # tool, and the most relevant tool stays first.
    twins = [_tool("weather_forecast", "Current weather and forecast for a city", city="City name"),
             _tool("city_weather", "Get the current weather and the forecast in a city", city="The city")]
    ix = ToolIndex(SMALL + twins, progress=False)
    request = "What is the weather and forecast in Paris today, and then put on some jazz?"
    weather = {"get_weather", "weather_forecast", "city_weather"}
    plain = [h.tool.name for h in ix.search(request, 3, diversity=0)]
    diverse = [h.tool.name for h in ix.search(request, 3, diversity=0.6)]
    assert set(plain) == weather
    assert diverse[0] == plain[0] and "play_music" in diverse and len(weather & set(diverse)) == 1
    with pytest.raises(ToolIndexError, match="diversity"):
        ToolIndex(SMALL, dense=False, diversity=1.0)
    with pytest.raises(ToolIndexError, match="diversity"):
        ix.search(request, 3, diversity=-0.1)
