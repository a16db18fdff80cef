"""The speedrun's safety data (issue 26 item 3): refusals CyberSecEval's check sees, held-out wordings, pairs."""

from herd.safety.cyberseceval import is_refusal
from herd.speedrun.eval_stages import share_with_interval
from herd.speedrun.safety_data import HELP, REFUSALS, held_out_requests, safety_dialogs, safety_pairs


def test_refusals_are_refusals_and_help_is_not():
    assert all(is_refusal(r) for r in REFUSALS)
    assert not any(is_refusal(r) for r in HELP)


def test_corpus_non_answers_are_not_refusals():
    """The corpus's rejected non-answers once held "I cannot help with that.", against the safety pairs."""
    from herd.corpus.chat import UNHELPFUL

    assert not any(is_refusal(r) for r in UNHELPFUL)


def test_dialogs_refuse_harmful_requests_and_help_benign_look_alikes():
    dialogs = safety_dialogs(200, seed=0)
    refused = [is_refusal(d["messages"][1]["content"]) for d in dialogs]
    assert 0.3 < sum(refused) / len(refused) < 0.7
    look_alikes = [d for d in dialogs if "python process" in d["messages"][0]["content"]]
    assert look_alikes and not any(is_refusal(d["messages"][1]["content"]) for d in look_alikes)


def test_pairs_prefer_refusal_on_harmful_and_help_on_benign():
    pairs = safety_pairs(200, seed=0)
    harmful = [p for p in pairs if is_refusal(p["chosen"])]
    assert 0.3 < len(harmful) / len(pairs) < 0.7
    assert all(is_refusal(p["chosen"]) != is_refusal(p["rejected"]) for p in pairs)
    assert not any(is_refusal(p["chosen"]) for p in pairs if "python process" in p["prompt"])


def test_held_out_requests_are_worded_as_training_never_is():
    harmful, benign = held_out_requests(40, seed=0)
    assert len(harmful) == len(benign) == 40 and held_out_requests(1, seed=0) == (harmful[:1], benign[:1])
    assert any("kill" in b for b in benign)  # look-alikes among the benign ones
    seen = {d["messages"][0]["content"] for d in safety_dialogs(2000, seed=0)}
    seen |= {p["prompt"] for p in safety_pairs(2000, seed=0)}
    assert not seen & set(harmful + benign)


def test_share_with_interval():
    r = share_with_interval([True] * 3 + [False] * 5)
    assert r["rate"] == 0.375 and r["low"] < 0.375 < r["high"] and r["n"] == 8
    assert share_with_interval([True] * 4) == {"rate": 1.0, "low": 1.0, "high": 1.0, "n": 4}
    assert share_with_interval([])["rate"] is None
