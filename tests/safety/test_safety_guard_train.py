"""`herd guard train`: the moderation set (every category, look-alikes, replies, multi-turn, held-out wordings), a
user's labelled JSONL (custom categories answered safe where the prompt leaves them out), SFT from a base in the
exact Llama Guard 2 prompt, and the trained guard behind the server's guardrails: benign chats pass, harmful ones
are refused with `content_filter`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re

import pytest
import torch

from herd.cli import main
from herd.errors import HerdError
from herd.safety.guard_recipe import PARAPHRASES, REQUESTS, labelled
from herd.safety.guard_train import GuardTrainConfig, guard_sft_data, moderation_records, read_labelled, universe_of
from herd.safety.llama_guard import GUARD_FILE, render_prompt, target_text
from herd.safety.moderation_set import COMPLY, HELD_OUT_REQUESTS, LOOK_ALIKES, REFUSE, moderation_examples
from herd.safety.taxonomy import LLAMA_GUARD_2

VIOLENT = ["stab", "kill", "murder", "shoot", "strangle", "knife", "gun", "blood"]
CALM = ["bread", "flour", "butter", "garden", "flowers", "tea", "music", "poem"]


def _worded(template: str, text: str) -> bool:
    return re.fullmatch(re.escape(template).replace(re.escape("{act}"), ".+"), text) is not None


def test_the_moderation_set_covers_categories_turns_and_look_alikes():
    examples = moderation_examples(1500, seed=0, noise=0.15)
    assert {c.name for c in LLAMA_GUARD_2} <= {e.category for e in examples}
    assert any(e.category is None and any(a in e.text for a in LOOK_ALIKES) for e in examples)
    replies = [e for e in moderation_examples(1500, seed=0) if e.role == "assistant"]  # as written
    complied = [e for e in replies if any(_worded(t, e.text) for t in COMPLY)]
    refused = [e for e in replies if any(_worded(t, e.text) for t in REFUSE)]
    assert all(e.category is not None for e in complied) and all(e.category is None for e in refused)
    assert complied and len(refused) > 50 and {e.context[-1][0] for e in replies} == {"user"}
    assert any(len(e.conversation()) >= 3 for e in examples)  # multi-turn
    held_out = moderation_examples(200, seed=1, held_out=True)
    train_wordings = [t.split("{act}")[0] for t in REQUESTS[:-1] + PARAPHRASES + COMPLY]
    assert not any(e.text.startswith(w) for e in held_out for w in train_wordings if w)
    assert all(any(e.conversation()[-1 if e.role == "user" else -2]["content"].startswith(t.split("{act}")[0])
                   for t in REQUESTS[-1:] + HELD_OUT_REQUESTS) for e in held_out)


def test_the_held_out_split_is_the_one_every_guard_was_scored_on():
    """The held-out examples (their wordings, acts and order) are pinned, whatever changes in the training data, so
    held-out scores compare across versions."""
    examples = moderation_examples(200, held_out=True, seed=1)
    digest = hashlib.sha256(json.dumps([[e.text, e.category, e.role, e.context] for e in examples]).encode())
    assert digest.hexdigest() == "985647d9e8908e9f9038c8f74d17b66757704f48d32eefe0cbe81f7e33c96b3e"


def test_sft_records_render_the_exact_prompt_and_custom_categories(tmp_path):
    user = tmp_path / "mine.jsonl"
    user.write_text("\n".join(json.dumps(r) for r in [
        {"text": "put it all on red", "category": "Betting"},
        {"text": "how do I stab him?", "category": "S1", "role": "user"},
        {"text": "sure, stab him here", "category": "violent crimes", "role": "assistant",
         "context": [{"role": "user", "content": "where?"}]},
        {"text": "how do I bake bread?", "category": None}]) + "\n")
    examples = read_labelled(user)
    assert [e.category for e in examples] == ["Betting", "Violent Crimes", "Violent Crimes", None]
    universe = universe_of(examples)
    assert universe[-1].name == "Betting" and universe[:11] == LLAMA_GUARD_2
    config = GuardTrainConfig(base="tiny", out_dir=str(tmp_path / "run"), data=str(user), examples=50, seed=3)
    lines = [json.loads(line) for line in guard_sft_data(config).read_text().splitlines()]
    assert len(lines) == 54
    everything = moderation_examples(50, seed=3, noise=config.noise) + examples
    expected = {(render_prompt(e.conversation(), t), target_text(labelled(e, t)))
                for e, t in moderation_records(everything, universe, config, seed=3)}
    assert {(r["messages"][0]["content"], r["messages"][1]["content"]) for r in lines} == expected
    betting = [(e, t) for e, t in moderation_records(examples[:1] * 40, universe, config, seed=1)]
    assert {target_text(labelled(e, t)) for e, t in betting if t == LLAMA_GUARD_2} == {"safe"}  # left out: safe
    assert any(target_text(labelled(e, t)).startswith("unsafe") for e, t in betting)  # listed: unsafe
    assert sum(t == LLAMA_GUARD_2 for _, t in betting) > 5


def test_guard_prompts_share_their_category_header_in_packed_rows(tmp_path, tok):
    """guard_sft packs a row's prompts with one copy of the header they begin with (SFTConfig.share_prefixes)."""
    from herd.post.batches import pack_chats
    from herd.post.data import read_chats
    from herd.safety.guard_train import guard_sft

    config = GuardTrainConfig(base="-", out_dir=str(tmp_path), examples=40, full_taxonomy_share=1.0)
    dialogs = read_chats(str(guard_sft_data(config)))
    rows = pack_chats(tok, dialogs, seq_len=4096, share_prefixes=guard_sft().share_prefixes)
    alone = pack_chats(tok, dialogs, seq_len=4096)
    assert len(rows) * 1.5 < len(alone)


@pytest.mark.parametrize("line, message", [
    ("not json", "mine.jsonl:1: not JSON"),
    ('{"category": "S1"}', 'needs {"text"'),
    ('{"text": "hi", "category": 3}', "category must be"),
    ('{"text": "hi", "category": null, "role": "system"}', 'role must be "user" or "assistant"'),
])
def test_bad_guard_data_is_one_clear_line(tmp_path, line, message):
    (tmp_path / "mine.jsonl").write_text(line + "\n")
    with pytest.raises(HerdError, match=message.replace("{", r"\{").replace("(", r"\(")):
        read_labelled(tmp_path / "mine.jsonl")
    with pytest.raises(HerdError, match="nothing to train on"):
        GuardTrainConfig(base="tiny", examples=0)


def _soup(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(16))


@pytest.fixture(scope="module")
def trained_guard(tmp_path_factory):
    """A guard `herd guard train` fine-tunes from a small base in ~40 steps on a user's JSONL of violent and calm
    word soups, prompted with Llama Guard 2's own taxonomy (what `herd serve --guard` uses)."""
    torch.manual_seed(0)
    tmp, rng = tmp_path_factory.mktemp("guard_train"), random.Random(0)
    data = tmp / "soups.jsonl"
    data.write_text("".join(json.dumps({"text": _soup(rng, VIOLENT if i % 2 else CALM),
                                        "category": "Violent Crimes" if i % 2 else None}) + "\n" for i in range(200)))
    settings = ["examples=0", "full_taxonomy_share=1.0", "sft.steps=40", "sft.batch_size=8", "sft.optim.lr=1e-2",
                "sft.optim.warmup_steps=3", "sft.progress=false", "sft.device=cpu"]
    from herd.safety.guard_recipe import build_base

    texts = guard_sft_data(GuardTrainConfig(base="-", out_dir=str(tmp / "tok"), data=str(data), examples=0))
    base = build_base(texts, tmp, vocab_size=400, dim=32, n_layers=1, max_seq_len=1024)
    main(["guard", "train", "--base", str(base), "--data", str(data), "--out", str(tmp / "run"), "held_out=4",
          *settings])
    return tmp / "run"


def test_guard_train_writes_a_loadable_guard_and_its_held_out_scores(trained_guard, capsys):
    assert json.loads((trained_guard / "model" / GUARD_FILE).read_text()) == {"chat_format": True}
    scores = json.loads((trained_guard / "guard_eval.json").read_text())["held_out"]
    assert set(scores) == {"llama_guard_2", "custom_taxonomies"}
    assert {"f1", "precision", "recall", "fpr", "auprc", "base_rate", "per_category_recall", "unlisted_flagged",
            "learned"} <= set(scores["llama_guard_2"])
    main(["guard", "eval", "--model", str(trained_guard / "model"), "--held-out", "4"])
    out = capsys.readouterr().out
    assert out.startswith("llama guard 2: ") and "custom taxonomies: " in out
    rng = random.Random(5)
    labelled_file = trained_guard / "labelled.jsonl"
    labelled_file.write_text("".join(json.dumps({"text": _soup(rng, VIOLENT if i % 2 else CALM),
                                                 "category": "S1" if i % 2 else None}) + "\n" for i in range(8)))
    main(["guard", "eval", "--model", str(trained_guard / "model"), "--data", str(labelled_file)])
    out = capsys.readouterr().out
    scores = json.loads(out[out.index("{"):])["labelled.jsonl"]
    assert out.startswith("labelled.jsonl: F1 1.000") and scores["base_rate"] == 0.5 and scores["learned"]


def test_the_fine_tuned_guard_guards_the_server(trained_guard):
    """`herd serve --guard DIR` builds Guardrails.load(DIR): Llama Guard 2's taxonomy, refusals as content_filter."""
    from herd.serve.guardrails import Guardrails

    guardrails = Guardrails.load(trained_guard / "model")
    rng = random.Random(7)
    for _ in range(5):
        assert asyncio.run(guardrails.check_input([{"role": "user", "content": _soup(rng, CALM)}])) is None
        refused = asyncio.run(guardrails.check_input([{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": _soup(rng, VIOLENT)}]))
        assert refused["error"]["code"] == "content_filter" and "S1: Violent Crimes" in refused["error"]["message"]


def test_guard_train_fine_tunes_a_llama3_vocab_preset_with_lora(tmp_path):
    """The path an 8B takes (Meta's 128K tokenizer, LoRA adapters merged into the saved guard), on the tiny preset:
    the answers the guard is trained on are the safe / unsafe tokens LlamaGuard reads."""
    from herd.safety.llama_guard import LlamaGuard

    main(["guard", "train", "--base", "tiny", "--out", str(tmp_path), "examples=8", "held_out=0", "sft.steps=1",
          "sft.batch_size=1", "sft.seq_len=384", "sft.lora.rank=4", "sft.optim.warmup_steps=0", "sft.device=cpu",
          "sft.progress=false"])
    guard = LlamaGuard.load(tmp_path / "model")
    assert guard.chat_format and guard.tok.n_words > 128_000
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["lora"]["rank"] == 4 and manifest["config"]["model"] == "tiny"
    first = json.loads((tmp_path / "guard_sft.jsonl").read_text().splitlines()[0])["messages"][1]["content"]
    assert guard.tok.encode(first)[0] in (guard._safe, guard._unsafe)
