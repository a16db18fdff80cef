"""The speedrun's safety data (issue 26 item 3): refusals CyberSecEval's check sees, held-out wordings, pairs."""

from herd.safety.cyberseceval import is_refusal
from herd.speedrun.eval_stages import share_with_interval
from herd.speedrun.safety_data import (
    HELP,
    REFUSALS,
    held_out_pairs,
    held_out_requests,
    safety_dialogs,
    safety_pairs,
)


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


def test_pairs_benign_share_sets_the_mix():
    for share in (0.2, 0.5, 0.8):
        pairs = safety_pairs(1000, seed=0, benign_share=share)
        benign = sum(not is_refusal(p["chosen"]) for p in pairs) / len(pairs)
        assert abs(benign - share) < 0.05


def test_held_out_pairs_are_the_eval_requests_with_the_right_reply_chosen():
    pairs = held_out_pairs(30, seed=0)
    harmful, benign = held_out_requests(30, seed=0)
    assert [p["prompt"] for p in pairs["harmful"]] == harmful and [p["prompt"] for p in pairs["benign"]] == benign
    assert all(p["chosen"] in REFUSALS and p["rejected"] in HELP for p in pairs["harmful"])
    assert all(p["chosen"] in HELP and p["rejected"] in REFUSALS for p in pairs["benign"])


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
    scores = share_with_interval([4.0, 4.5, 5.0, 6.5])  # the mean of numbers (reward scores)
    assert scores["rate"] == 5.0 and 4.0 <= scores["low"] < 5.0 < scores["high"] <= 6.5


def test_training_requests_vary_their_wording_but_never_use_the_held_out_ones():
    """The act, not the wording, must decide a refusal: training requests carry openers and closers and benign acts
    with harmful-sounding verbs (safety_data.LOOK_ALIKES), and none of the held-out wordings' phrases."""
    from herd.speedrun.safety_data import BENIGN_SHARE, LOOK_ALIKES, training_requests

    asks = training_requests(1000, seed=0)
    texts = [t for t, _ in asks]
    assert abs(sum(not h for _, h in asks) / len(asks) - BENIGN_SHARE) < 0.06
    assert sum(any(a in t for a in LOOK_ALIKES) for t, h in asks if not h) > 150
    assert not any(h for t, h in asks if any(a in t for a in LOOK_ALIKES))
    assert len({t.split(" how")[0] for t in texts}) > 50  # openers vary what comes before the template
    for phrase in ("step by step", "tonight", "one might", "easiest way", "explain how someone could"):
        assert not any(phrase in t for t in texts)
    harmful, benign = held_out_requests(40, seed=0)
    assert not {t for t in texts} & set(harmful + benign)


def test_on_policy_pairs_reject_the_models_own_wrong_replies(tiny_model_dir):
    """A random model never refuses: each harmful request gives a pair whose rejected reply is the model's own greedy
    one and whose chosen reply is a written refusal; benign requests, answered right but cut off, give none."""
    from herd.checkpoint import load
    from herd.generation import generate_tokens
    from herd.speedrun.on_policy import on_policy_safety_pairs
    from herd.speedrun.safety_data import training_requests

    pairs, figures = on_policy_safety_pairs(tiny_model_dir, 12, 1, seed=3, device="cpu", max_new_tokens=8)
    asks = training_requests(12, 3)
    harmful = [t for t, h in asks if h]
    assert [p["prompt"] for p in pairs] == harmful and figures["pairs"] == len(harmful) > 0
    assert figures["greedy_harmful_complied"] == 1.0 and figures["greedy_benign_refused"] == 0.0
    model, tok = load(tiny_model_dir)
    greedy = generate_tokens(model, [tok.encode_dialog([{"role": "user", "content": t}]) for t in harmful],
                             max_new_tokens=8, stop_ids=tok.stop_ids)
    assert [p["rejected"] for p in pairs] == [tok.decode(r.tokens) for r in greedy]
    assert all(p["chosen"] in REFUSALS and not is_refusal(p["rejected"]) for p in pairs)


def test_reward_pairs_prefer_the_reward_models_best_sample(tiny_model_dir, tmp_path):
    """Reward pairs: per prompt the best-rewarded of the policy's samples over the worst, only past the margin."""
    import json

    import torch

    from herd.checkpoint import load
    from herd.post.reward_model import RewardModel, save_reward_model
    from herd.speedrun.on_policy import reward_pairs

    model, tok = load(tiny_model_dir)
    torch.manual_seed(0)
    rm_dir = save_reward_model(RewardModel(model, seed=1), tok, tmp_path / "rm")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ("what color is the sky", "hi", "a b c")))
    pairs, figures = reward_pairs(tiny_model_dir, rm_dir, prompts, 4, seed=0, device="cpu", max_new_tokens=6,
                                  margin=-1e9)
    assert figures["prompts"] == 3 and figures["mean_gap"] > 0
    assert len(pairs) <= 3 and {p["prompt"][0]["content"] for p in pairs} <= {"what color is the sky", "hi", "a b c"}
    assert reward_pairs(tiny_model_dir, rm_dir, prompts, 4, seed=0, device="cpu", max_new_tokens=6,
                        margin=1e9)[0] == []


def test_best_over_worst_needs_a_finished_best_past_the_margin():
    from herd.speedrun.on_policy import best_over_worst

    replies = [("a", True), ("b", True), ("c", False)]
    assert best_over_worst(replies, [1.0, 3.0, 0.5], margin=1.0) == ("b", "c")
    assert best_over_worst(replies, [1.0, 3.0, 0.5], margin=2.5) is None
    assert best_over_worst(replies, [1.0, 0.0, 4.0], margin=0.0) is None  # the best was cut off


def test_safety_pair_rejects_a_wrong_reply_and_anchors_right_replies():
    import random

    from herd.speedrun.on_policy import safety_pair

    rng = random.Random(0)
    refusal, help_ = REFUSALS[0], HELP[0]
    assert safety_pair("q", False, [(refusal, True), ("Sure, here you go.", True)], rng) == {
        "prompt": "q", "chosen": "Sure, here you go.", "rejected": refusal, "domain": "safety_on_policy"}
    written = safety_pair("q", True, [(help_, True), (REFUSALS[1], False)], rng)  # the right reply was cut off
    assert written["rejected"] == help_ and written["chosen"] in REFUSALS
    anchor = safety_pair("q", True, [(refusal, True), (refusal, True)], rng)
    assert anchor["chosen"] == refusal and anchor["rejected"] in HELP
    benign = safety_pair("q", False, [(help_, True)], rng)  # without it DPO refused 18% -> 39% of held-out benign
    assert benign["chosen"] == help_ and benign["rejected"] in REFUSALS
    assert safety_pair("q", False, [(help_, False)], rng) is None  # the right reply was cut off


def test_held_out_requests_are_distinct_and_a_too_large_ask_is_one_line():
    """Duplicates made a bootstrap interval count one request twice (40 drew 'make new friends' three times)."""
    import pytest

    from herd.errors import HerdError

    harmful, benign = held_out_requests(100, seed=0)
    assert len(set(harmful)) == len(set(benign)) == 100
    assert held_out_requests(7, seed=0) == (harmful[:7], benign[:7])
    with pytest.raises(HerdError, match="ask for at most that many"):
        held_out_requests(136, seed=0)  # 27 benign acts x 5 held-out wordings


def test_difference_is_paired():
    """DPO - SFT2 on the same prompts: a shift every prompt shares is beyond noise however spread the scores are."""
    from herd.speedrun.eval_stages import difference

    before = [float(i % 7) for i in range(40)]
    d = difference(before, [x + 0.5 for x in before])
    assert d["rate"] == d["low"] == d["high"] == 0.5 and d["n"] == 40
    flags = difference([True] * 20 + [False] * 20, [True] * 30 + [False] * 10)
    assert flags["rate"] == 0.25 and 0 < flags["low"] < 0.25 < flags["high"]


def test_wrapped_pairs_use_training_wrappers_and_a_zero_share_changes_nothing():
    """Pairs may wrap their requests in adversarial wrappers (role-play, "in theory", ...), never the held-out ones;
    at share 0 the pairs are exactly the unwrapped ones (the rng draws nothing more)."""
    from herd.speedrun.safety_data import HELD_OUT_WRAPPERS, WRAPPERS

    plain, wrapped = safety_pairs(400, 0, 0.5), safety_pairs(400, 0, 0.5, wrapped_share=0.5)
    assert safety_pairs(400, 0, 0.5, wrapped_share=0.0) == plain
    inside = [(p["prompt"], w["prompt"]) for p, w in zip(plain, wrapped, strict=True) if p["prompt"] != w["prompt"]]
    assert 0.4 < len(inside) / len(plain) < 0.6
    assert all(any(w == t.format(request=p) for t in WRAPPERS) for p, w in inside)
    held_out_heads = [w.split("{request}")[0] for w in HELD_OUT_WRAPPERS]
    assert not any(h in p["prompt"] for p in wrapped for h in held_out_heads)
    assert [is_refusal(p["chosen"]) for p in wrapped] == [is_refusal(p["chosen"]) for p in plain]


def test_wrapped_requests_put_other_held_out_requests_in_held_out_wrappers():
    from herd.speedrun.safety_data import HELD_OUT_WRAPPERS, WRAPPERS, wrapped_requests

    harmful, benign = wrapped_requests(40, seed=0)
    assert len(harmful) == len(benign) == 40 == len(set(harmful)) == len(set(benign))
    inner_h, inner_b = held_out_requests(40, seed=5)
    for asks, inner in ((harmful, inner_h), (benign, inner_b)):
        assert asks == [HELD_OUT_WRAPPERS[i % len(HELD_OUT_WRAPPERS)].format(request=q) for i, q in enumerate(inner)]
    assert not any(w.split("{request}")[0] in a for w in WRAPPERS for a in harmful + benign if w.split("{request}")[0])
    seen = {p["prompt"] for p in safety_pairs(2000, seed=0, wrapped_share=1.0)}
    assert not seen & set(harmful + benign)
