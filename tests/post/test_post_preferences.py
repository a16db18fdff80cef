"""Reward model and DPO: losses equal TRL's on the same batch, and tiny runs move their objectives."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from herd.post.batches import encode_pairs, pair_batch
from herd.post.data import PreferencePair, read_preferences
from herd.post.dpo import DPOConfig, dpo, dpo_batch_loss
from herd.post.reward_model import (
    RewardConfig,
    RewardModel,
    load_reward_model,
    reward_loss,
    train_reward_model,
)
from tests.tiny import make_model, write_jsonl

COLORS = ["blue", "green", "white", "black", "yellow", "red", "purple"]


def preference_records(n: int, offset: int = 0) -> list[dict]:
    """Separable preferences: the chosen reply says good, the rejected one bad."""
    return [{"prompt": f"what is {COLORS[(i + offset) % 7]}", "chosen": f"good {COLORS[(i + offset + 1) % 7]}",
             "rejected": f"bad {COLORS[(i + offset + 2) % 7]}"} for i in range(n)]


def fake_accelerator() -> SimpleNamespace:
    return SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)


def trl_pair_batch(tok, n=3, seed=0):
    pairs = [PreferencePair([{"role": "user", "content": f"what is {c}"}], f"good {c} " * (i + 1), f"bad {c}")
             for i, c in enumerate(COLORS[:n])]
    encoded = encode_pairs(tok, pairs, 64)
    tokens, targets, last = pair_batch(encoded, list(range(n)), tok.eos_id)
    completion = torch.zeros_like(tokens)
    for row, mask in enumerate(encoded.masks[:n] + encoded.masks[n:]):
        completion[row, : len(mask)] = torch.tensor(mask)
    return tokens, targets, last, completion


def test_reward_loss_equals_trl(tok):
    trl = pytest.importorskip("trl")
    tokens, targets, last, _ = trl_pair_batch(tok)
    model = RewardModel(make_model(tok))
    ours = reward_loss(model, (tokens, targets, last))
    rewards = model(tokens, last).detach()
    fake = SimpleNamespace(model=SimpleNamespace(training=True), args=SimpleNamespace(center_rewards_coefficient=None),
                           accelerator=fake_accelerator(), _total_train_tokens=0, _tp_size=1,
                           _metrics={"train": defaultdict(list)})
    theirs = trl.RewardTrainer.compute_loss(
        fake, lambda **kw: SimpleNamespace(logits=rewards[:, None]), {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)})
    assert abs(float(ours.total.detach()) / ours.count - float(theirs)) < 1e-6


@pytest.mark.parametrize("nll_weight", [0.0, 0.2])
def test_dpo_loss_equals_trl(tok, nll_weight):
    """Herd's DPO (Meta's variant: NLL on chosen weighted 0.2) equals TRL DPOTrainer's loss with
    loss_type=[sigmoid, sft], loss_weights=[1, nll_weight], on log-probs TRL gets computed independently."""
    trl = pytest.importorskip("trl")
    tokens, targets, last, completion = trl_pair_batch(tok)
    policy = make_model(tok)
    reference_logps = torch.randn(tokens.shape[0]) * 3 - 20
    ours = dpo_batch_loss(policy, (tokens, targets, last, reference_logps), beta=0.1, nll_weight=nll_weight, reference=None)

    logits = policy(tokens).detach()
    per_token = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0] * completion[:, 1:]
    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                              mean_logits=torch.zeros_like(per_token), is_top1=torch.zeros_like(per_token, dtype=torch.bool))
    losses = ["sigmoid", "sft"] if nll_weight else ["sigmoid"]
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=fake_accelerator(), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=losses,
        loss_weights=[1.0, nll_weight][: len(losses)], beta=0.1, use_weighting=False,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    inputs = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens), "completion_mask": completion,
              "ref_chosen_logps": reference_logps.chunk(2)[0], "ref_rejected_logps": reference_logps.chunk(2)[1]}
    theirs = trl.DPOTrainer._compute_loss(fake, lambda **kw: outputs, inputs, False)
    assert abs(float(ours.total.detach()) / ours.count - float(theirs)) < 1e-6


def run_config(cls, tmp_path, model_dir, **changes):
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = write_jsonl(tmp_path / "train.jsonl", preference_records(28))
    val = write_jsonl(tmp_path / "val.jsonl", preference_records(7, offset=3))
    fields = {"out_dir": str(tmp_path / "run"), "model": str(model_dir), "data": str(train), "val_data": str(val), "steps": 30,
                  "batch_size": 4, "seq_len": 64, "device": "cpu", "progress": False, "checkpoint_interval": 0}
    config = cls(**{**fields, **changes})
    config.optim.lr = 1e-3
    return config


def test_reward_model_learns_a_separable_preference(tmp_path, tiny_model_dir):
    result = train_reward_model(run_config(RewardConfig, tmp_path, tiny_model_dir))
    assert result.figures["pairs"] == 28 and result.figures["val_accuracy"] >= 0.9
    model, tok = load_reward_model(result.model_dir)
    pairs = read_preferences(tmp_path / "val.jsonl")
    encoded = encode_pairs(tok, pairs, 64)
    scores = model.score(encoded.ids, pad_id=tok.eos_id)
    n = len(pairs)
    accuracy = sum(c > r for c, r in zip(scores[:n], scores[n:])) / n
    assert accuracy == pytest.approx(result.figures["val_accuracy"])  # the saved model scores as the trained one


@pytest.mark.parametrize("reference", ["precomputed", "model"])
def test_dpo_widens_the_margin(tmp_path, tiny_model_dir, reference):
    result = dpo(run_config(DPOConfig, tmp_path, tiny_model_dir, reference=reference, steps=20))
    assert result.figures["val_margin"] > 0.5 and result.figures["val_accuracy"] >= 0.9
