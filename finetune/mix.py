"""The training mixture: every source, the examples the sources lack, and the shares that combine them.

A recipe's ``data`` section (`MixConfig`) names a total and a share per component:

* ``sealtools``: Seal-Tools requests (single and parallel calls), the called tools shuffled among
  ``distractors`` extra tools; a ``hard_distractors`` share of them comes from the request's own field (tools
  close in topic, as in BFCL's `multiple` or a retriever's top k), the rest from the whole Seal-Tools library;
* ``apibank``: API-Bank multi-turn dialogues ending in one call (the dialogue's own tools);
* ``glaive``: Glaive conversations (calls, answers after tool results, and requests no tool fits);
* ``synth``: `finetune.synth` conversations over the packaged catalogue (single, parallel, nested, chat, no_tool, in
  the proportions ``synth_mix``; the sources hold almost no request that calls one tool several times);
* ``no_call``: a Seal-Tools request offered only tools that cannot serve it (half from the request's own field,
  half from others) -> a short text answer saying so. The sources have almost no such examples, and without
  them a fine-tune calls a tool whenever one is listed;
* ``chat_with_tools``: a tool-free prompt (self-instruct) with a few unrelated tools offered -> the base model's
  own answer: offered tools are no reason to call one;
* ``chat``: a tool-free prompt, no tools -> the base model's own answer (plain-chat retention, see
  `finetune.chat_answers`).

Held out from every component: the tools that Seal-Tools' out-of-domain split calls (never offered, not even as
distractors, so that split measures unseen tools), the MT-Bench questions, and any example whose user text
matches a BFCL question (`bfcl_filter`). Everything is drawn from one seeded RNG per component, so a recipe and
a seed give the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .data import Example, make_call_id, write_jsonl
from .sources import (SEALTOOLS_HELDOUT_SPLIT, SEALTOOLS_TRAIN_SPLITS, load_apibank, load_glaive,
                      load_sealtools, mt_bench_prompts, public_tool, sealtools_tools, self_instruct_prompts)

COMPONENTS = ("sealtools", "apibank", "glaive", "synth", "no_call", "chat_with_tools", "chat")
MAX_CHAT_PROMPT_CHARS = 400  # longer self-instruct inputs mostly hold documents to rewrite; their answers run past the budget

NO_CALL_REPLIES = (
    "I'm sorry, but none of the available tools can do that. They are for {topics}.",
    "I can't help with that using the tools I have: they only {topics}.",
    "None of the tools available to me handles this request. I can {topics}, but not this.",
    "Unfortunately I don't have a tool for that. The functions I can use are for {topics}.",
)


class MixError(ValueError):
    """A recipe's data section is unusable; the message names the key."""


@dataclass
class MixConfig:
    """The ``data`` section of a recipe. Shares are normalised to sum to one."""

    total: int = 1600
    seed: int = 0
    shares: dict[str, float] = field(default_factory=lambda: {
        "sealtools": 0.30, "apibank": 0.10, "glaive": 0.10, "synth": 0.15, "no_call": 0.10,
        "chat_with_tools": 0.08, "chat": 0.17})
    distractors: tuple[int, int] = (0, 4)  # extra tools beside the called ones (inclusive range)
    hard_distractors: float = 0.0  # share of those drawn from the request's own Seal-Tools field
    synth_mix: dict[str, float] | None = None  # synth objectives' proportions (None: finetune.synth.DEFAULT_MIX)
    chat_max_new_tokens: int = 200  # budget of the base model's answers
    data_dir: str | None = None  # the shared data folder (default: constrained_fc.eval.data.data_dir)

    @classmethod
    def from_mapping(cls, raw: Any, source: str = "recipe data") -> "MixConfig":
        if not isinstance(raw, dict):
            raise MixError(f"{source}: expected a mapping")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MixError(f"{source}: unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
        cfg = cls(**{k: v for k, v in raw.items() if k != "distractors"})
        if "distractors" in raw:
            d = raw["distractors"]
            if not (isinstance(d, (list, tuple)) and len(d) == 2 and all(isinstance(x, int) for x in d)
                    and 0 <= d[0] <= d[1]):
                raise MixError(f"{source}: distractors must be [min, max] with 0 <= min <= max")
            cfg.distractors = (d[0], d[1])
        bad = sorted(set(cfg.shares) - set(COMPONENTS))
        if bad:
            raise MixError(f"{source}: unknown component(s) in shares: {bad} (known: {', '.join(COMPONENTS)})")
        if any(not isinstance(v, (int, float)) or v < 0 for v in cfg.shares.values()) or \
                sum(cfg.shares.values()) <= 0:
            raise MixError(f"{source}: shares must be non-negative numbers, not all zero")
        if not isinstance(cfg.total, int) or cfg.total < 1:
            raise MixError(f"{source}: total must be a positive integer")
        if not isinstance(cfg.hard_distractors, (int, float)) or not 0 <= cfg.hard_distractors <= 1:
            raise MixError(f"{source}: hard_distractors must be a number between 0 and 1")
        if cfg.synth_mix is not None:
            from .synth import check_mix

            try:  # here, so a bad recipe fails before minutes of data preparation, not after
                check_mix(cfg.synth_mix)
            except ValueError as e:
                raise MixError(f"{source}: synth_mix: {e}") from None
        return cfg

    def counts(self) -> dict[str, int]:
        """Examples per component (largest remainder, so they add up to `total`)."""
        s = sum(self.shares.values())
        exact = {k: self.total * v / s for k, v in self.shares.items() if v > 0}
        counts = {k: int(v) for k, v in exact.items()}
        for k in sorted(exact, key=lambda k: counts[k] - exact[k])[:self.total - sum(counts.values())]:
            counts[k] += 1
        return counts


# ------------------------------------------------------------------------------------------------ held out
def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def bfcl_question_texts(data_dir: str | Path | None = None) -> set[str]:
    """Normalised text of every user turn in every BFCL question file."""
    from constrained_fc.eval.data import data_dir as resolve

    texts = set()
    for path in sorted((Path(resolve(data_dir)) / "bfcl").glob("BFCL_v3_*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            for turn in json.loads(line).get("question", []):
                for m in turn if isinstance(turn, list) else [turn]:
                    if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                        t = normalise_text(m["content"])
                        if t:
                            texts.add(t)
    return texts


def leaks(example: Example, forbidden: set[str], min_chars: int = 24) -> str | None:
    """The forbidden text an example's user turns contain (equal, or one inside the other for texts of at
    least `min_chars`), or None."""
    for m in example.messages:
        if m.get("role") != "user" or not isinstance(m.get("content"), str):
            continue
        text = normalise_text(m["content"])
        if text in forbidden:
            return text
        if len(text) >= min_chars:
            for f in forbidden:
                if len(f) >= min_chars and (f in text or text in f):
                    return f
    return None


# ---------------------------------------------------------------------------------------------- building
def _topic(tool: dict) -> str:
    desc = (tool["function"].get("description") or tool["function"]["name"]).strip().rstrip(".")
    return desc[:1].lower() + desc[1:]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _take(pool: list, n: int, rng: random.Random) -> list:
    """`n` items: a shuffled pass over `pool`, repeated when `n` exceeds it."""
    out: list = []
    while len(out) < n and pool:
        batch = list(pool)
        rng.shuffle(batch)
        out += batch[:n - len(out)]
    return out


@dataclass
class MixReport:
    counts: dict[str, int] = field(default_factory=dict)
    available: dict[str, int] = field(default_factory=dict)
    repeated: dict[str, int] = field(default_factory=dict)
    dropped_bfcl: int = 0
    sources: dict[str, str] = field(default_factory=dict)
    heldout_tools: int = 0
    sha256: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class MixBuilder:
    """Builds one mixture. `answer` maps a list of tool-free prompts to the base model's answers
    ({prompt: {"answer", "finished"}}, as `finetune.chat_answers.generate_answers` returns)."""

    def __init__(self, config: MixConfig, answer: Callable[[list[str]], dict[str, dict]] | None = None):
        self.config = config
        self.answer = answer
        self.report = MixReport()
        root = config.data_dir
        self.tools = sealtools_tools(root)
        self.seal = {}
        for split in SEALTOOLS_TRAIN_SPLITS:
            exs, rep = load_sealtools(split, root, self.tools)
            self.seal[split] = exs
            self.report.sources[f"sealtools/{split}"] = rep.summary()
        held, rep = load_sealtools(SEALTOOLS_HELDOUT_SPLIT, root, self.tools)
        # Tools only the out-of-domain split calls: never offered in training, so that split can score unseen tools.
        trained = {n for exs in self.seal.values() for ex in exs for n in ex.called_tools}
        self.heldout_tool_names = {n for ex in held for n in ex.called_tools} - trained
        self.report.heldout_tools = len(self.heldout_tool_names)
        self.pool = sorted(n for n in self.tools if n not in self.heldout_tool_names)
        self.by_field: dict[str, list[str]] = {}
        for name in self.pool:
            self.by_field.setdefault(self.tools[name]["_field"], []).append(name)
        self.forbidden = bfcl_question_texts(root) | {normalise_text(p) for p in mt_bench_prompts(root)}

    def _rng(self, component: str) -> random.Random:
        return random.Random(f"mix:{self.config.seed}:{component}")

    def _distract(self, ex: Example, rng: random.Random) -> Example:
        lo, hi = self.config.distractors
        offered = set(ex.tool_names)
        # The random pool is sampled before the count is drawn, as it always was: a recipe without hard
        # distractors keeps giving the same bytes (and the shipped card's data hash).
        far = [t for t in rng.sample(self.pool, hi + len(offered)) if t not in offered]  # >= hi tools
        n = rng.randint(lo, hi)
        names: list[str] = []
        if self.config.hard_distractors:
            near = [t for f in ex.meta.get("fields") or [] for t in self.by_field.get(f, []) if t not in offered]
            names = rng.sample(near, min(len(near), sum(rng.random() < self.config.hard_distractors
                                                         for _ in range(n))))
        n_near = len(names)
        names += [t for t in far if t not in names][:n - n_near]
        tools = list(ex.tools) + [public_tool(self.tools[t]) for t in names]
        rng.shuffle(tools)
        meta = {**ex.meta, "distractors": len(names)}
        if self.config.hard_distractors:
            meta["near_distractors"] = n_near
        return Example(messages=ex.messages, tools=tools, meta=meta)

    def sealtools(self, n: int) -> list[Example]:
        rng = self._rng("sealtools")
        calls = [ex for split in SEALTOOLS_TRAIN_SPLITS for ex in self.seal[split]]
        self.report.available["sealtools"] = len(calls)
        return [self._distract(ex, rng) for ex in _take(calls, n, rng)]

    def apibank(self, n: int) -> list[Example]:
        exs, rep = load_apibank(self.config.data_dir)
        self.report.sources["apibank"] = rep.summary()
        self.report.available["apibank"] = len(exs)
        return _take(exs, n, self._rng("apibank"))

    def glaive(self, n: int) -> list[Example]:
        exs, rep = load_glaive(self.config.data_dir)
        self.report.sources["glaive"] = rep.summary()
        self.report.available["glaive"] = len(exs)
        return _take(exs, n, self._rng("glaive"))

    def synth(self, n: int) -> list[Example]:
        from .synth import synthesize

        exs = synthesize(None, n, seed=self.config.seed, mix=self.config.synth_mix)
        for ex in exs:
            ex.meta["source"] = "synth"
        self.report.available["synth"] = n
        return exs

    def no_call(self, n: int) -> list[Example]:
        """A request offered only tools that cannot serve it, answered in text."""
        rng = self._rng("no_call")
        requests = [ex for split in SEALTOOLS_TRAIN_SPLITS for ex in self.seal[split]]
        self.report.available["no_call"] = len(requests)
        out = []
        for k, ex in enumerate(_take(requests, n, rng)):
            called = set(ex.called_tools)
            fields = ex.meta.get("fields") or []
            same = [t for f in fields for t in self.by_field.get(f, []) if t not in called]
            # Tools of the request's own field are the hard negatives (close in topic, still unable to serve it).
            # A same-field tool might serve the request under another name, so they make up only half.
            source = same if (k % 2 == 0 and len(same) >= 1) else [t for t in self.pool if t not in called]
            names = rng.sample(source, min(len(source), rng.randint(1, 3)))
            tools = [public_tool(self.tools[t]) for t in names]
            reply = rng.choice(NO_CALL_REPLIES).format(topics=_join([_topic(t) for t in tools]))
            user = next(m for m in ex.messages if m["role"] == "user")
            out.append(Example(messages=[dict(user), {"role": "assistant", "content": reply}], tools=tools,
                               meta={"source": ex.meta["source"], "line": ex.meta.get("line"),
                                     "objective": "no_tool", "component": "no_call"}))
        return out

    def _chat(self, prompts: list[str], with_tools: bool, component: str) -> list[Example]:
        rng = self._rng(component)
        answers = self.answer(prompts) if prompts else {}
        out = []
        for p in prompts:
            a = answers[p]
            tools = ([public_tool(self.tools[t]) for t in rng.sample(self.pool, rng.randint(1, 3))]
                     if with_tools else [])
            out.append(Example(messages=[{"role": "user", "content": p},
                                         {"role": "assistant", "content": a["answer"]}],
                               tools=tools, meta={"source": "self-instruct", "objective": "chat",
                                                  "component": component,
                                                  # the base model was cut by the budget: its end is not a stop
                                                  "open_end": not a["finished"]}))
        return out

    def build(self) -> list[Example]:
        counts = self.config.counts()
        parts: dict[str, list[Example]] = {}
        for name in ("sealtools", "apibank", "glaive", "synth", "no_call"):
            if counts.get(name):
                parts[name] = getattr(self, name)(counts[name])
        n_chat_tools, n_chat = counts.get("chat_with_tools", 0), counts.get("chat", 0)
        if n_chat_tools or n_chat:
            if self.answer is None:
                raise MixError("chat components need the base model's answers (answer=...)")
            prompts = [p for p in self_instruct_prompts(self.config.data_dir) if len(p) <= MAX_CHAT_PROMPT_CHARS]
            self.report.available["chat"] = len(prompts)
            prompts = _take(prompts, len(prompts), self._rng("chat-prompts"))
            # Disjoint prompts for the two chat components while there are enough; repeats only beyond that.
            first = prompts[:n_chat_tools]
            rest = prompts[n_chat_tools:] or prompts
            parts["chat_with_tools"] = self._chat(first, True, "chat_with_tools")
            parts["chat"] = self._chat(_take(rest, n_chat, self._rng("chat")), False, "chat")
        out = []
        for name, exs in parts.items():
            kept = []
            for ex in exs:
                if leaks(ex, self.forbidden):
                    self.report.dropped_bfcl += 1
                    continue
                ex.meta.setdefault("component", name)
                kept.append(ex)
            self.report.counts[name] = len(kept)
            avail = self.report.available.get(name)
            if avail is not None and len(exs) > avail:
                self.report.repeated[name] = len(exs) - avail
            out += kept
        random.Random(f"mix:{self.config.seed}:order").shuffle(out)
        for i, ex in enumerate(out):  # ids unique across the file, in the 9-character shape templates expect
            for m in ex.messages:
                for c in m.get("tool_calls") or []:
                    c.setdefault("id", make_call_id(i))
        return out


def build_mix(config: MixConfig, out_file: str | Path,
              answer: Callable[[list[str]], dict[str, dict]] | None = None) -> MixReport:
    """Build the mixture, write it as JSONL to `out_file`, and return the report (counts, sha256)."""
    builder = MixBuilder(config, answer)
    examples = builder.build()
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(examples, out_file)
    builder.report.sha256 = hashlib.sha256(out_file.read_bytes()).hexdigest()
    return builder.report


__all__ = ["MixConfig", "MixBuilder", "MixReport", "MixError", "build_mix", "bfcl_question_texts", "leaks",
           "normalise_text", "COMPONENTS", "NO_CALL_REPLIES"]
