"""Pairwise human-preference evaluation: verdict parsing (junk included), both orders cancelling a judge's
position bias, rates and tables, the shipped 12-category prompt set, and `herd eval-pairwise` end to end with
tiny models judged by a herd model and by a model behind herd's OpenAI-compatible server."""

import json
import re

import pytest

import herd
from herd.cli import main
from herd.errors import HerdError
from herd.eval.judge import parse_verdict
from herd.eval.pairwise import (
    CATEGORIES,
    PreferencePrompt,
    compare,
    load_prompts,
    markdown_table,
    outcome,
    run_pairwise,
    summarize,
)
from tests.live_server import live_server


@pytest.mark.parametrize(("text", "verdict"), [
    ("Reply A is more accurate.\n[[A]]", "A"),
    ("[[B]]", "B"),
    ("Both are fine. [[C]]", "tie"),
    ("I first thought [[A]], and my final verdict is [[A]].", "A"),
    ("[[A]] or maybe [[B]]", None),  # contradicts itself
    ("[A]", None),
    ("[[D]]", None),
    ("A is better", None),
    ("", None),
    ("ĠĠ<|eot_id|>\x00 )]]][[ ", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_outcome_needs_the_same_preference_in_both_orders():
    assert outcome("A", "B") == "win"  # A first: A; B first: position B, i.e. model A
    assert outcome("B", "A") == "loss"
    assert outcome("A", "A") == "tie"  # prefers whatever is shown first: position bias, not preference
    assert outcome("A", "tie") == "tie" and outcome("tie", "tie") == "tie"
    assert outcome(None, "A") is None and outcome("B", None) is None


def _replies(prompt: str) -> tuple[str, str]:
    found = re.search(r"\[Reply A\]\n(.*)\n\[End of reply A\]\n\n\[Reply B\]\n(.*)\n\[End of reply B\]", prompt, re.DOTALL)
    return found.group(1), found.group(2)


def longer_judge(prompts):
    """Prefers the longer reply, wherever it is shown; a tie for equal lengths."""
    verdicts = []
    for prompt in prompts:
        a, b = _replies(prompt)
        verdicts.append("[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]")
    return [f"Judging by detail. {v}" for v in verdicts]


PROMPTS = [PreferencePrompt(f"{c}-0", c, f"a {c} request") for c in ("advice", "coding", "coding", "reasoning")]
REPLIES_A = ["a long and careful reply", "short", "same", "a detailed proof"]
REPLIES_B = ["short", "a much longer reply", "same", "ok"]


def test_consistent_judge_gives_wins_losses_and_ties():
    records = compare(PROMPTS, REPLIES_A, REPLIES_B, longer_judge)
    assert [r["outcome"] for r in records] == ["win", "loss", "tie", "win"]
    assert records[0]["verdict_a_first"] == "A" and records[0]["verdict_b_first"] == "B"
    summary = summarize(records)
    assert summary["overall"] == {"n": 4, "invalid": 0, "win": 0.5, "tie": 0.25, "loss": 0.25}
    assert list(summary["categories"]) == ["advice", "coding", "reasoning"]  # the release's order
    assert summary["categories"]["coding"] == {"n": 2, "invalid": 0, "win": 0.0, "tie": 0.5, "loss": 0.5}


def test_position_biased_judge_cancels_to_ties_and_junk_is_invalid():
    biased = compare(PROMPTS, REPLIES_A, REPLIES_B, lambda prompts: ["[[A]]"] * len(prompts))
    assert {r["outcome"] for r in biased} == {"tie"}
    junk = compare(PROMPTS, REPLIES_A, REPLIES_B, lambda prompts: ["lorem [[ipsum]]"] * len(prompts))
    summary = summarize(junk)
    assert summary["overall"] == {"n": 4, "invalid": 4, "win": None, "tie": None, "loss": None}
    table = markdown_table(summary, "m1", "m2", "j")
    assert "| **overall** | 4 | " + " | ".join(["no result (judge unreadable: 4/4)"] * 3) + " | 4 |" in table
    half = compare(PROMPTS, REPLIES_A, REPLIES_B, lambda prompts: ["[[B]]"] * 4 + ["no idea"] * 4)
    assert [r["outcome"] for r in half] == [None] * 4


def test_rates_over_mostly_unreadable_pairs_are_no_result():
    three = compare(PROMPTS, REPLIES_A, REPLIES_B, lambda prompts: ["junk"] * 3 + ["[[A]]"] * 4 + ["[[B]]"])
    assert [r["outcome"] for r in three] == [None, None, None, "win"]
    summary = summarize(three)  # 3 of 4 pairs unreadable: the one readable win is no 100% win rate
    assert summary["overall"] == {"n": 4, "invalid": 3, "win": None, "tie": None, "loss": None}
    assert "| **overall** | 4 | no result (judge unreadable: 3/4) |" in markdown_table(summary, "m1", "m2", "j")
    junk_two = ["junk", "junk", "[[B]]", "[[B]]", *["[[A]]"] * 4]
    two = summarize(compare(PROMPTS, REPLIES_A, REPLIES_B, lambda prompts: junk_two))
    assert two["overall"] == {"n": 4, "invalid": 2, "win": 0.0, "tie": 0.0, "loss": 1.0}  # half: still a result
    with pytest.raises(HerdError, match="returned 1 replies for 8 prompts"):
        compare(PROMPTS, REPLIES_A, REPLIES_B, lambda prompts: ["[[A]]"])


def test_markdown_table_rows():
    summary = summarize(compare(PROMPTS, REPLIES_A, REPLIES_B, longer_judge))
    lines = markdown_table(summary, "model-x", "model-y", "judge-z").splitlines()
    assert lines[0] == "model-x (A) vs model-y (B), judged by judge-z in both orders"
    assert "| coding | 2 | 0.0% | 50.0% | 50.0% | 0 |" in lines
    assert lines[-1] == "| **overall** | 4 | 50.0% | 25.0% | 25.0% | 0 |"


def test_shipped_prompt_set_covers_the_twelve_categories(tmp_path):
    prompts = load_prompts()
    assert len(CATEGORIES) == 12 and {p.category for p in prompts} == set(CATEGORIES)
    assert len({p.id for p in prompts}) == len(prompts) and all(p.prompt.strip() for p in prompts)
    assert [p.category for p in load_prompts(per_category=1)] == list(CATEGORIES)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "1", "category": "poetry", "prompt": "hi"}) + "\n")
    with pytest.raises(HerdError, match="unknown category 'poetry'"):
        load_prompts(bad)
    bad.write_text("not json\n")
    with pytest.raises(HerdError, match="line 1: expected JSON"):
        load_prompts(bad)
    with pytest.raises(HerdError, match="no prompt file"):
        load_prompts(tmp_path / "missing.jsonl")


@pytest.fixture(scope="module")
def model_b(tmp_path_factory):
    """A second tiny model, different weights from the "tiny" preset."""
    model, tok = herd.load("tiny")
    model.init_weights(seed=1)
    return str(herd.save(model, tok, tmp_path_factory.mktemp("model_b")))


def _check_run(out, n_prompts):
    body = json.loads((out / "pairwise.json").read_text())
    records = body["records"]
    assert len(records) == n_prompts and [r["category"] for r in records] == list(CATEGORIES)
    assert all(r["judge_a_first"] and r["judge_b_first"] for r in records)
    assert records[0]["reply_a"] != records[0]["reply_b"]
    for r in records:  # what the parser reads from the tiny judge's (mostly junk) outputs
        assert r["outcome"] == outcome(parse_verdict(r["judge_a_first"]), parse_verdict(r["judge_b_first"]))
    assert body["summary"] == summarize(records)
    assert (out / "pairwise.md").read_text().count("\n| ") == 14  # header, 12 categories, overall


def test_cli_end_to_end_with_a_herd_judge(model_b, tmp_path, capsys):
    main([
        "eval-pairwise", "--model-a", "tiny", "--model-b", model_b, "--judge", "tiny", "--per-category", "1",
        "--max-new-tokens", "8", "--judge-max-new-tokens", "8", "--out", str(tmp_path),
    ])
    assert "wrote pairwise.json and pairwise.md" in capsys.readouterr().out
    _check_run(tmp_path, 12)


@pytest.fixture(scope="module")
def judge_server():
    """herd's OpenAI-compatible server with the tiny model on a free loopback port."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    from herd.serve.server import create_app

    model, tok = herd.load("tiny")
    app = create_app(model, tok, model_name="tiny-judge")
    with live_server(app) as base:
        yield base + "/v1"


def test_end_to_end_with_a_judge_behind_an_openai_endpoint(model_b, judge_server, tmp_path):
    summary = run_pairwise(
        "tiny", model_b, "tiny-judge", judge_url=judge_server, per_category=1, max_new_tokens=8,
        judge_max_new_tokens=8, out_dir=tmp_path,
    )
    _check_run(tmp_path, 12)
    assert summary["overall"]["n"] == 12
    with pytest.raises(HerdError, match="the judge at .* failed"):
        run_pairwise("tiny", model_b, "no-such-model", judge_url=judge_server, per_category=1, max_new_tokens=2)
