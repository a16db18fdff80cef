"""`herd rejection-sample ... tp=2` under torchrun: the policy and the reward model split over 2 ranks keep the same
replies with the same rewards as one process."""

import json
from pathlib import Path

import pytest

from herd.post.rejection_sampling import RejectionSamplingConfig, rejection_sample
from herd.post.reward_model import RewardModel, save_reward_model
from tests.model.test_tp_inference import torchrun
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
