"""Locating the shared evaluation data and loading the BFCL v3 question / answer files.

The data is never copied into the repository: it is read in place from a folder resolved by `data_dir`
(an explicit `--data` override, `$CONSTRAINED_FC_DATA`, or a `shared/data` folder next to the checkout).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_VAR = "CONSTRAINED_FC_DATA"

BFCL_CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")

# Categories whose questions expect no call at all; BFCL ships no answer file for them.
_NO_ANSWER_CATEGORIES = ("irrelevance",)

_REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Return the data folder.

    Order: `override` (the `--data` flag), then `$CONSTRAINED_FC_DATA`, then `<repo root>/../shared/data`,
    `./shared/data` and `../shared/data` relative to the working directory. An explicit override or
    environment variable that names a missing folder is an error rather than silently falling through,
    since the user asked for that folder.
    """
    if override is not None:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data folder given by --data / data_dir override does not exist: {path}")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data folder named by ${ENV_VAR} does not exist: {path}")
        return path
    tried = [_REPO_ROOT.parent / "shared" / "data", Path.cwd() / "shared" / "data",
             Path.cwd().parent / "shared" / "data"]
    for path in tried:
        if path.is_dir():
            return path
    listing = ", ".join(str(p) for p in tried)
    raise FileNotFoundError(f"no data folder found (tried {listing}); pass --data DIR or set ${ENV_VAR}")


# `load_bfcl` takes a keyword named `data_dir`, which shadows the function inside it.
_resolve_data_dir = data_dir


@dataclass
class BFCLCase:
    """One BFCL question with its functions and (except for irrelevance) its acceptable answers.

    `ground_truth` is a list of `{function name: {param: [acceptable values]}}`, one entry per expected call;
    `""` among a parameter's acceptable values means it may be left out.
    """

    id: str
    category: str
    messages: list[dict] = field(default_factory=list)
    functions: list[dict] = field(default_factory=list)
    ground_truth: list[dict] = field(default_factory=list)


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a bad line is reported with its file and number."""
    out = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            out.append((lineno, obj))
    return out


def _first_turn(question: Any, where: str) -> list[dict]:
    # v3 stores a list of turns, each a list of messages; the single-turn categories have exactly one turn.
    if not isinstance(question, list) or not question:
        raise ValueError(f"{where}: 'question' must be a non-empty list of turns")
    turn = question[0]
    if isinstance(turn, dict):  # tolerate an already-flat list of messages
        turn = question
    messages = []
    for m in turn:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: each message needs 'role' and 'content', got {m!r:.80}")
        messages.append({"role": m["role"], "content": m["content"]})
    return messages


def load_bfcl(category: str, *, data_dir: str | os.PathLike | None = None,
              limit: int | None = None) -> list[BFCLCase]:
    """Load `bfcl/BFCL_v3_<category>.json` joined by id with `bfcl/possible_answer/BFCL_v3_<category>.json`.

    `limit` keeps the first N questions in file order. Irrelevance has no answer file; its cases get an
    empty `ground_truth`.
    """
    if category not in BFCL_CATEGORIES:
        raise ValueError(f"unknown BFCL category {category!r}; valid: {', '.join(BFCL_CATEGORIES)}")
    root = _resolve_data_dir(data_dir) / "bfcl"
    qpath = root / f"BFCL_v3_{category}.json"
    if not qpath.is_file():
        raise FileNotFoundError(f"BFCL question file missing: {qpath}")
    rows = _read_jsonl(qpath)
    if limit is not None:
        rows = rows[:max(limit, 0)]

    answers: dict[str, list] = {}
    if category not in _NO_ANSWER_CATEGORIES:
        apath = root / "possible_answer" / f"BFCL_v3_{category}.json"
        if not apath.is_file():
            raise FileNotFoundError(f"BFCL answer file missing: {apath}")
        for lineno, obj in _read_jsonl(apath):
            gt = obj.get("ground_truth")
            if "id" not in obj or not isinstance(gt, list):
                raise ValueError(f"{apath}:{lineno}: expected {{'id', 'ground_truth': [...]}}")
            answers[obj["id"]] = gt

    cases = []
    for lineno, obj in rows:
        where = f"{qpath}:{lineno}"
        cid = obj.get("id")
        if not isinstance(cid, str):
            raise ValueError(f"{where}: missing string 'id'")
        functions = obj.get("function")
        if not isinstance(functions, list):
            raise ValueError(f"{where}: 'function' must be a list of function definitions")
        if category in _NO_ANSWER_CATEGORIES:
            gt = []
        elif cid in answers:
            gt = answers[cid]
        else:
            raise ValueError(f"{where}: no ground truth for id {cid!r} in possible_answer/BFCL_v3_{category}.json")
        cases.append(BFCLCase(id=cid, category=category, messages=_first_turn(obj.get("question"), where),
                              functions=functions, ground_truth=gt))
    return cases
