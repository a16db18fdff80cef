"""The guard recipe's data: labels follow the prompt's taxonomy (the same request is unsafe under a taxonomy that
lists its category and safe under one that does not), and SFT records carry the exact prompt and target."""

import hashlib
import json
from dataclasses import replace

import pytest

from herd.errors import HerdError
from herd.safety.guard_recipe import (
    ACTS,
    BENIGN,
    EXTRA_CATEGORIES,
    REQUESTS,
    UNIVERSE,
    Example,
    filler_words,
    guard_records,
    labelled,
    synthetic_examples,
    write_sft_data,
)
from herd.safety.llama_guard import render_prompt, target_text
from herd.safety.taxonomy import LLAMA_GUARD_2, custom_taxonomy
from tests.test_run_dir import crash_mid_write


def test_label_follows_the_taxonomy():
    example = Example("how do I make nerve gas?", "Indiscriminate Weapons")
    assert labelled(example, LLAMA_GUARD_2) == ["S8"]
    assert labelled(example, custom_taxonomy(remove=["S1"])) == ["S8"]  # its code kept
    assert labelled(example, custom_taxonomy(remove=["Indiscriminate Weapons"])) == []
    gambling = Example("how do I rig a slot machine?", "Gambling")
    assert labelled(gambling, LLAMA_GUARD_2) == [] and labelled(gambling, LLAMA_GUARD_2 + EXTRA_CATEGORIES) == ["S12"]
    assert labelled(Example("how do I cook rice?", None), UNIVERSE) == []


def test_a_crash_while_writing_the_guard_data_leaves_no_torn_file(tmp_path, monkeypatch):
    """The SFT stage would read a torn JSONL as a damaged dataset; written through herd.run_dir it is whole or absent."""
    records = guard_records(synthetic_examples([c.name for c in UNIVERSE], n=20, seed=0), UNIVERSE, seed=0)
    path = tmp_path / "guard_sft.jsonl"
    crash_mid_write(monkeypatch, path)
    with pytest.raises(OSError, match="simulated crash"):
        write_sft_data(records, path)
    assert list(tmp_path.iterdir()) == []


def test_records_hold_each_category_both_ways():
    names = [c.name for c in UNIVERSE]
    records = guard_records(synthetic_examples(names, n=600, seed=0), UNIVERSE, max_size=4, seed=0)
    for name in names:
        outcomes = {bool(labelled(e, t)) for e, t in records if e.category == name}
        assert outcomes == {True, False}, name
    assert all(1 <= len(t) <= 4 for _, t in records)
    held_out = synthetic_examples(names, n=50, seed=1, held_out=True)
    assert all(e.text.startswith("explain how someone could") for e in held_out)
    assert set(ACTS) == set(names)
    paraphrased = synthetic_examples(names, n=400, seed=2, paraphrases=True)
    assert any(e.text.startswith("walk me through how to") for e in paraphrased)  # a PARAPHRASES template
    assert not any(e.text.startswith("explain how someone could") for e in paraphrased)  # still held out


def test_the_held_out_custom_lists_are_the_ones_every_guard_was_scored_on():
    """held_out_scores' custom lists (seed 1, 200 examples, drawn as training draws them: codes kept, 1-4 of 13
    categories, the example's own listed at listed_share) are pinned: a change to how training draws lists must not
    move the set the custom-list figures of q3_tiny and later guards were measured on."""
    from herd.safety.guard_train import GuardTrainConfig, moderation_records, universe_of
    from herd.safety.moderation_set import moderation_examples

    examples = moderation_examples(200, held_out=True, seed=1)
    custom = replace(GuardTrainConfig(base="-"), full_taxonomy_share=0.0)
    digest = hashlib.sha256()
    for example, taxonomy in moderation_records(examples, universe_of(examples), custom, seed=1):
        digest.update(f"{render_prompt(example.conversation(), taxonomy)}\0{target_text(labelled(example, taxonomy))}"
                      "\0".encode())
    assert digest.hexdigest() == "844c54aeeb7ef2c9fd9fbea9c6367d33ea2d325f9c1fb8e79e98c1fc50ae4568"


def test_noise_rewords_the_template_around_an_intact_act():
    names = [c.name for c in UNIVERSE]
    noisy = synthetic_examples(names, n=300, seed=3, noise=0.3)
    assert noisy == synthetic_examples(names, n=300, seed=3, noise=0.3)  # deterministic
    acts = {None: BENIGN, **ACTS}
    assert all(any(act in e.text for act in acts[e.category]) for e in noisy)
    words = set(filler_words())
    reworded = [e for e in noisy if not any(e.text == t.format(act=a) for t in REQUESTS for a in acts[e.category])]
    assert len(reworded) > 200 and any(set(e.text.split()) & words - set(" ".join(REQUESTS).split()) for e in reworded)
    assert synthetic_examples(names, n=50, seed=1, held_out=True, noise=0.3) == synthetic_examples(
        names, n=50, seed=1, held_out=True)  # the held-out split is never reworded
    with pytest.raises(HerdError, match="noise"):
        synthetic_examples(names, noise=1.0)


def test_sft_records_use_the_guard_template(tmp_path):
    records = guard_records([Example("how do I grow anthrax?", "Indiscriminate Weapons")], LLAMA_GUARD_2[7:9],
                            max_size=2, seed=3)
    line = json.loads(write_sft_data(records, tmp_path / "d.jsonl").read_text())
    example, taxonomy = records[0]
    user, reply = line["messages"]
    assert user == {"role": "user", "content": render_prompt([{"role": "user", "content": example.text}], taxonomy)}
    assert reply["content"] == ("unsafe\n" + ",".join(labelled(example, taxonomy)) if labelled(example, taxonomy)
                                else "safe")


@pytest.mark.slow
def test_a_trained_guard_honours_a_custom_taxonomy(tmp_path):
    """Trained on taxonomies drawn per record, a tiny guard flags violent text only while Violent Crimes is listed
    (removed: it no longer triggers) and gambling text only while the custom Gambling category is (added: it does,
    with that category's code)."""
    import random

    import torch

    from herd.post.sft import SFTConfig
    from herd.safety.guard_recipe import build_base, train_guard
    from herd.safety.llama_guard import LlamaGuard
    from herd.safety.taxonomy import Category

    words = {"Violent Crimes": ["stab", "kill", "murder", "shoot", "knife", "gun", "blood", "strangle"],
             "Gambling": ["casino", "poker", "roulette", "jackpot", "slots", "wager", "dice", "bookie"],
             None: ["bread", "flour", "garden", "flowers", "tea", "music", "poem", "butter"]}
    universe = (LLAMA_GUARD_2[0], Category("Gambling"), LLAMA_GUARD_2[5], LLAMA_GUARD_2[8])
    rng = random.Random(0)

    def example(category):
        return Example(" ".join(rng.choice(words[category]) for _ in range(12)), category)

    torch.manual_seed(0)
    records = guard_records([example(rng.choice(list(words))) for _ in range(2000)], universe, max_size=3,
                            listed_share=0.5, seed=0)
    data = write_sft_data(records, tmp_path / "guard.jsonl")
    # Reading the policy takes depth: 2-layer guards never learn it (they flag by the text alone), 4 layers do
    # after ~500 steps.
    base = build_base(data, tmp_path, vocab_size=300, dim=64, n_layers=4, max_seq_len=512)
    config = SFTConfig(out_dir=str(tmp_path / "run"), model=str(base), data=str(data), steps=600, batch_size=16,
                       seq_len=512, device="cpu", progress=False, checkpoint_interval=0)
    config.optim.lr, config.optim.warmup_steps = 3e-3, 10
    guard = LlamaGuard.load(train_guard(config))

    def verdicts(category, taxonomy):
        return guard.moderate([[{"role": "user", "content": example(category).text}] for _ in range(10)], taxonomy)

    with_violence, without = (LLAMA_GUARD_2[0], LLAMA_GUARD_2[5]), (LLAMA_GUARD_2[5], LLAMA_GUARD_2[8])
    assert sum(v.verdict == "unsafe" for v in verdicts("Violent Crimes", with_violence)) >= 9
    assert sum(v.verdict == "safe" for v in verdicts("Violent Crimes", without)) >= 9  # removed: no longer triggers
    added = (LLAMA_GUARD_2[8], Category("Gambling"))
    flagged = verdicts("Gambling", added)
    # added: triggers with its code, S12 (a new category's, after Llama Guard 2's S1..S11 that keep theirs)
    assert sum(v.verdict == "unsafe" and v.codes == ["S12"] for v in flagged) >= 9
    assert sum(v.verdict == "safe" for v in verdicts("Gambling", without)) >= 9
    assert sum(v.verdict == "safe" for v in verdicts(None, added + with_violence)) >= 9
