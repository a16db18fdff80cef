"""The embedded default corpus: deterministic, sized, documented noise really planted."""

import json

import pytest

from herd.corpus import SIZES, generate_corpus
from herd.errors import HerdError


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_corpus(a, "micro", seed=0)
    generate_corpus(b, "micro", seed=0)
    generate_corpus(c, "micro", seed=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jsonl"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "raw/web/web.jsonl").read_bytes() != (c / "raw/web/web.jsonl").read_bytes()


def test_sizes_and_domains(tmp_path):
    m = generate_corpus(tmp_path, "micro")
    assert 0.2e6 < sum(m["bytes"].values()) < 2e6
    assert set(m["domains"]) >= {"general", "math", "code", "multilingual", "junk"}
    sft = _lines(tmp_path / "post/sft.jsonl")
    assert len(sft) == SIZES["micro"].sft and sft[0]["messages"][-1]["role"] == "assistant"
    prefs = _lines(tmp_path / "post/prefs.jsonl")
    assert all(p["chosen"] != p["rejected"] for p in prefs)
    assert all("#### " in r["answer"] for r in _lines(tmp_path / "eval/math.jsonl"))


def test_noise_is_planted(tmp_path):
    m = generate_corpus(tmp_path, "micro")
    assert set(m["planted"]) >= {"exact_duplicate", "near_duplicate", "boilerplate", "character_soup", "repeated_lines"}
    web = [r["text"] for r in _lines(tmp_path / "raw/web/web.jsonl")]
    assert len(web) - len(set(web)) >= m["planted"]["exact_duplicate"] // 2  # duplicates really repeat texts
    assert any("@example.com" in t for t in web)  # PII for pii_mask


def test_eval_items_held_out_of_sft(tmp_path):
    generate_corpus(tmp_path, "micro")
    asked = {d["messages"][0]["content"] for d in _lines(tmp_path / "post/sft.jsonl")}
    assert not asked & {r["question"] for r in _lines(tmp_path / "eval/math.jsonl")}
    assert not asked & {r["question"] for r in _lines(tmp_path / "eval/knowledge.jsonl")}


def test_unknown_size(tmp_path):
    with pytest.raises(HerdError, match="choose from"):
        generate_corpus(tmp_path, "huge")


def test_addition_probe_held_out_and_worked_in_columns(tmp_path):
    from herd.corpus.math import add_steps

    generate_corpus(tmp_path, "micro")
    asked = {d["messages"][0]["content"] for d in _lines(tmp_path / "post/sft.jsonl")}
    rows = _lines(tmp_path / "eval/addition.jsonl")
    assert len(rows) == SIZES["micro"].eval_items and not asked & {r["question"] for r in rows}
    for r in rows:
        a, b = (int(x) for x in r["question"].removeprefix("What is ").rstrip("?").split(" + "))
        assert r["gold"] == str(a + b) and r["answer"].endswith(f"#### {a + b}")
    assert add_steps(37, 45) == "37 + 45: ones 7 + 5 = 12, write 2 carry 1; tens 3 + 4 + 1 = 8; so 82."
    assert any(d["messages"][0]["content"].startswith("What is ") and " + " in d["messages"][0]["content"]
               for d in _lines(tmp_path / "post/sft.jsonl"))  # SFT teaches the probe's phrasing


def test_stdlib_corpus_is_this_interpreters_source_split_by_path(tmp_path):
    from herd.corpus.stdlib import VAL_SHARE, stdlib_files, write_stdlib_corpus

    counts = write_stdlib_corpus(tmp_path / "a")
    files = stdlib_files()
    assert counts["train"] + counts["val"] >= 0.99 * len(files) > 500
    assert 0.5 / VAL_SHARE < counts["val"] / len(files) < 2 / VAL_SHARE
    first = json.loads((tmp_path / "a" / "train.jsonl").open().readline())["text"]
    assert first in {p.read_text(encoding="utf-8") for p in files[:5]}
    write_stdlib_corpus(tmp_path / "b")
    assert (tmp_path / "a" / "val.jsonl").read_bytes() == (tmp_path / "b" / "val.jsonl").read_bytes()
