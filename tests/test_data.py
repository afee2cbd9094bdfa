"""Data-folder resolution and the BFCL loaders."""
import json

import pytest

from constrained_fc.eval import data as data_mod
from constrained_fc.eval.data import BFCL_CATEGORIES, BFCLCase, data_dir, load_bfcl

EXPECTED_COUNTS = {"simple": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200, "irrelevance": 240}


def _real_data_or_skip():
    try:
        return data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"BFCL data not available: {e}")


def _write_fake(root, category="simple", questions=None, answers=None):
    bfcl = root / "bfcl"
    (bfcl / "possible_answer").mkdir(parents=True, exist_ok=True)
    questions = questions if questions is not None else [
        {"id": f"{category}_0", "question": [[{"role": "system", "content": "sys"},
                                              {"role": "user", "content": "hi", "extra": 1}]],
         "function": [{"name": "f", "parameters": {"type": "dict", "properties": {}}}]},
        {"id": f"{category}_1", "question": [[{"role": "user", "content": "again"}]], "function": []},
    ]
    (bfcl / f"BFCL_v3_{category}.json").write_text("".join(json.dumps(q) + "\n" for q in questions))
    if answers is None:
        answers = [{"id": q["id"], "ground_truth": [{"f": {}}]} for q in reversed(questions)]
    (bfcl / "possible_answer" / f"BFCL_v3_{category}.json").write_text(
        "".join(json.dumps(a) + "\n" for a in answers))
    return root


@pytest.mark.parametrize("category", BFCL_CATEGORIES)
def test_load_real_files(category):
    root = _real_data_or_skip()
    cases = load_bfcl(category, data_dir=root)
    assert len(cases) == EXPECTED_COUNTS[category]
    assert len({c.id for c in cases}) == len(cases)
    for c in cases:
        assert isinstance(c, BFCLCase) and c.category == category
        assert c.messages and all(set(m) == {"role", "content"} for m in c.messages)
        assert c.messages[-1]["role"] == "user"
        assert c.functions and all("name" in f and "parameters" in f for f in c.functions)
        if category == "irrelevance":
            assert c.ground_truth == []
        else:
            assert c.ground_truth and all(len(g) == 1 for g in c.ground_truth)
    if category == "simple":
        assert cases[0].id == "simple_0"
        assert cases[0].ground_truth == [{"calculate_triangle_area": {"base": [10], "height": [5],
                                                                      "unit": ["units", ""]}}]


def test_limit():
    root = _real_data_or_skip()
    assert [c.id for c in load_bfcl("parallel", data_dir=root, limit=3)] == ["parallel_0", "parallel_1", "parallel_2"]
    assert load_bfcl("simple", data_dir=root, limit=0) == []


def test_join_by_id_and_flatten(tmp_path):
    _write_fake(tmp_path)
    cases = load_bfcl("simple", data_dir=tmp_path)
    assert [c.id for c in cases] == ["simple_0", "simple_1"]
    assert cases[0].messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert cases[0].ground_truth == [{"f": {}}]
    assert load_bfcl("simple", data_dir=str(tmp_path), limit=1)[0].id == "simple_0"


def test_env_var_override(tmp_path, monkeypatch):
    _write_fake(tmp_path)
    monkeypatch.setenv("CONSTRAINED_FC_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert [c.id for c in load_bfcl("simple")] == ["simple_0", "simple_1"]


def test_explicit_override_beats_env_var(tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("CONSTRAINED_FC_DATA", str(other))
    assert data_dir(tmp_path) == tmp_path


def test_missing_override_or_env_dir(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="--data"):
        data_dir(tmp_path / "nope")
    monkeypatch.setenv("CONSTRAINED_FC_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="CONSTRAINED_FC_DATA"):
        data_dir()


def test_no_data_dir_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv("CONSTRAINED_FC_DATA", raising=False)
    (tmp_path / "repo").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.setattr(data_mod, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(FileNotFoundError) as info:
        data_dir()
    msg = str(info.value)
    assert "CONSTRAINED_FC_DATA" in msg and "--data" in msg
    assert str(tmp_path / "shared" / "data") in msg and str(tmp_path / "cwd" / "shared" / "data") in msg


def test_default_search_order(tmp_path, monkeypatch):
    monkeypatch.delenv("CONSTRAINED_FC_DATA", raising=False)
    (tmp_path / "repo").mkdir()
    work = tmp_path / "work"
    (work / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(data_mod, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(work)
    assert data_dir().resolve() == (work / "shared" / "data").resolve()
    (tmp_path / "shared" / "data").mkdir(parents=True)  # next to the repository: preferred
    assert data_dir().resolve() == (tmp_path / "shared" / "data").resolve()


def test_unknown_category(tmp_path):
    with pytest.raises(ValueError, match="unknown BFCL category 'java'.*simple, multiple"):
        load_bfcl("java", data_dir=tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="BFCL_v3_parallel.json"):
        load_bfcl("parallel", data_dir=tmp_path)


def test_bad_line_names_file_and_line(tmp_path):
    _write_fake(tmp_path)
    path = tmp_path / "bfcl" / "BFCL_v3_simple.json"
    path.write_text(path.read_text() + "{broken\n")
    with pytest.raises(ValueError, match=r"BFCL_v3_simple\.json:3: not valid JSON"):
        load_bfcl("simple", data_dir=tmp_path)


def test_missing_ground_truth(tmp_path):
    _write_fake(tmp_path, answers=[{"id": "simple_0", "ground_truth": []}])
    with pytest.raises(ValueError, match="no ground truth for id 'simple_1'"):
        load_bfcl("simple", data_dir=tmp_path)


def test_irrelevance_needs_no_answer_file(tmp_path):
    _write_fake(tmp_path, category="irrelevance")
    (tmp_path / "bfcl" / "possible_answer" / "BFCL_v3_irrelevance.json").unlink()
    cases = load_bfcl("irrelevance", data_dir=tmp_path)
    assert [c.ground_truth for c in cases] == [[], []]
