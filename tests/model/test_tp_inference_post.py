"""Post-training under torchrun with tp=2: `herd rejection-sample` (the policy and the reward model split over the
ranks) keeps one process's replies and rewards; `herd dpo` / `herd ppo` (the frozen reference and reward model split,
DPO's policy split by the DTensor training plan, RL's whole on every rank) take one process's steps: losses, held-out
figures and weights within 1e-5."""

import json
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

import herd
from herd.errors import HerdError
from herd.post.batches import encode_pairs, pair_batch
from herd.post.data import read_preferences
from herd.post.dpo import DPOConfig, dpo
from herd.post.logps import token_logps
from herd.post.ppo import PPOConfig, ppo
from herd.post.rejection_sampling import RejectionSamplingConfig, rejection_sample
from herd.post.reward_model import RewardModel, save_reward_model
from tests.model.test_tp_inference import ROOT, torchrun
from tests.post.test_post_preferences import run_config
from tests.tiny import make_model, write_jsonl


@pytest.mark.slow
def test_rejection_sampling_tp2_equals_tp1(tmp_path, tiny_model_dir, tok):
    rm_dir = save_reward_model(RewardModel(make_model(tok, seed=5)), tok, tmp_path / "rm")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "what is the sky"}, {"prompt": "what is snow"}])
    fields = dict(policy=str(tiny_model_dir), reward_model=str(rm_dir), prompts=str(prompts), samples_per_prompt=4,
                  max_new_tokens=5, batch_size=8, temperature=1.0, device="cpu", progress=False)
    one = rejection_sample(RejectionSamplingConfig(out_dir=str(tmp_path / "tp1"), **fields))
    overrides = [f"{key}={value}" for key, value in fields.items()]
    torchrun(2, "-m", "herd.cli", "rejection-sample", *overrides, f"out_dir={tmp_path / 'tp2'}", "tp=2")
    two = json.loads((tmp_path / "tp2/manifest.json").read_text())
    assert abs(two["mean_sample_reward"] - one["mean_sample_reward"]) < 1e-5
    kept = [[json.loads(line) for line in Path(path).read_text().splitlines()] for path in
            (one["output"], two["output"])]
    assert [r["messages"] for r in kept[0]] == [r["messages"] for r in kept[1]]
    assert all(abs(a["reward"] - b["reward"]) < 1e-5 for a, b in zip(*kept, strict=True))


def test_reference_logps_tp2_equal_tp1(tmp_path, tiny_model_dir, tok):
    """The frozen reference split over 2 ranks (each holds half the vocabulary rows of the head, whose softmax sums
    are all-reduced) scores DPO's pairs as the whole model does; TensorParallel.mean averages the ranks' gradients."""
    config = run_config(DPOConfig, tmp_path, tiny_model_dir)
    pairs = encode_pairs(tok, read_preferences(config.data), config.seq_len)
    tokens, targets, _ = pair_batch(pairs, [0, 1, 2, 3], tok.eos_id)
    torch.save((tokens, targets), tmp_path / "batch.pt")
    model, _ = herd.load(tiny_model_dir)
    with torch.no_grad():
        whole = token_logps(model, tokens, targets)
    torchrun(2, str(ROOT / "tests/model/tp_post_worker.py"), str(tmp_path), str(tiny_model_dir),
             str(tmp_path / "batch.pt"))
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["head_rows"] == model.config.vocab_size // 2
        assert (result["logps"] - whole).abs().max() < 1e-5 and whole.abs().sum() > 1
        assert torch.equal(result["mean"], torch.full((3,), 1.5))


def test_post_tp_errors_are_one_line(tmp_path, tiny_model_dir, monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(HerdError, match="n_heads of 4 is not divisible by --tp 3; use a --tp that divides it"):
        dpo(run_config(DPOConfig, tmp_path, tiny_model_dir, tp=3))
    with pytest.raises(HerdError, match="runs under torchrun: torchrun --nproc-per-node 2"):
        dpo(run_config(DPOConfig, tmp_path, tiny_model_dir, tp=2))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(HerdError, match="torchrun started 4 processes but --tp is 2"):
        dpo(run_config(DPOConfig, tmp_path, tiny_model_dir, tp=2))


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _same_run(one: Path, two: Path, keys: tuple[str, ...], weights_within: float = 1e-5) -> None:
    """Both runs' metrics (`keys` of every step and validation) within 1e-5, their exported policies within
    `weights_within`."""
    a, b = _records(one), _records(two)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for key in keys:
            if key in x:
                assert abs(x[key] - y[key]) < 1e-5, (key, x, y)
    first, _ = herd.load(one / "model")
    second, _ = herd.load(two / "model")
    for (name, x), y in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert (x - y).abs().max() < weights_within, name


def _pieces(run_dir: Path, name: str) -> int:
    """How many pieces the run's last checkpoint stores `name` in: one per rank for a DTensor-split weight."""
    last = run_dir / "checkpoints" / (run_dir / "checkpoints/latest").read_text().strip()
    return len(FileSystemReader(last).read_metadata().state_dict_metadata[name].chunks)


def _cli_overrides(config) -> list[str]:
    return [f"{key}={value}" for key, value in
            dict(model=config.model, data=config.data, val_data=config.val_data, steps=config.steps,
                 batch_size=config.batch_size, seq_len=config.seq_len, device="cpu", progress="false",
                 checkpoint_interval=0, reference=config.reference, **{"optim.lr": config.optim.lr}).items()]


@pytest.mark.slow
def test_dpo_tp2_equals_tp1(tmp_path, tiny_model_dir):
    """reference=model: the reference copy is split over the ranks, the policy by the training plan (its checkpoint
    holds a piece per rank); after the first step the policy has moved, so step 2's loss and the held-out margin
    measure the reference's log-probs."""
    config = run_config(DPOConfig, tmp_path, tiny_model_dir, reference="model", steps=2, out_dir=str(tmp_path / "tp1"))
    one = dpo(config)
    assert one.figures["val_margin"] != 0
    torchrun(2, "-m", "herd.cli", "dpo", *_cli_overrides(config), f"out_dir={tmp_path / 'tp2'}", "tp=2")
    _same_run(tmp_path / "tp1", tmp_path / "tp2", ("loss", "grad_norm", "margin_sum", "val_loss", "val_margin"))
    assert _pieces(tmp_path / "tp2", "model.layers.0.attention.wq.weight") == 2


@pytest.mark.slow
def test_ppo_tp2_equals_tp1(tmp_path, tiny_model_dir, tok):
    """reward=model: the reward model and the reference are split over the ranks, every rank samples the same
    rollouts from its whole policy; 2 rollouts of 2 epochs give the same losses and rewards within 1e-5, and weights
    within 1e-4 (Adam divides by the root of the squared gradients: a 1e-7 difference in a near-zero gradient moves a
    weight by up to lr)."""
    rm_dir = save_reward_model(RewardModel(make_model(tok, seed=5)), tok, tmp_path / "rm")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"what is {w}"} for w in ("snow", "the sky")])
    fields = dict(model=str(tiny_model_dir), prompts=str(prompts), reward="model", reward_model=str(rm_dir), steps=4,
                  prompts_per_rollout=2, group_size=2, batch_size=4, epochs=2, max_new_tokens=4, seq_len=64,
                  device="cpu", progress=False, checkpoint_interval=0)
    config = PPOConfig(out_dir=str(tmp_path / "tp1"), **fields)
    config.optim.lr = 3e-3
    ppo(config)
    overrides = [f"{key}={value}" for key, value in fields.items()]
    torchrun(2, "-m", "herd.cli", "ppo", *overrides, "optim.lr=3e-3", f"out_dir={tmp_path / 'tp2'}", "tp=2")
    _same_run(tmp_path / "tp1", tmp_path / "tp2",
              ("loss", "grad_norm", "reward_sum", "policy_loss_sum", "value_loss_sum", "completion_tokens"), 1e-4)
    assert _pieces(tmp_path / "tp2", "model.policy.layers.0.attention.wq.weight") == 1  # whole on every rank
