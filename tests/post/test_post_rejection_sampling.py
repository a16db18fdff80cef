"""Rejection sampling: K samples per prompt, the reward model's best of each kept as SFT data."""

import json
from pathlib import Path

import pytest

from herd.errors import HerdError
from herd.post.data import read_chats
from herd.post.rejection_sampling import RejectionSamplingConfig, rejection_sample
from herd.post.reward_model import RewardModel, save_reward_model
from tests.tiny import make_model, write_jsonl


def test_keeps_the_best_scored_sample(tmp_path, tiny_model_dir, tok):
    rm_dir = save_reward_model(RewardModel(make_model(tok, seed=5)), tok, tmp_path / "rm")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "what is the sky"}, {"prompt": "what is snow"},
                                                      {"messages": [{"role": "user", "content": "what is coal"},
                                                                    {"role": "assistant", "content": "black"}]}])
    config = RejectionSamplingConfig(out_dir=str(tmp_path / "rs"), policy=str(tiny_model_dir), reward_model=str(rm_dir),
                                     prompts=str(prompts), samples_per_prompt=6, max_new_tokens=5, batch_size=8,
                                     temperature=1.0, device="cpu", progress=False)
    manifest = rejection_sample(config)
    assert manifest["samples"] == 18 and manifest["mean_kept_reward"] > manifest["mean_sample_reward"]
    dialogs = read_chats(manifest["output"])  # valid SFT data
    records = [json.loads(line) for line in Path(manifest["output"]).read_text().splitlines()]
    assert [d[-2]["content"] for d in dialogs] == ["what is the sky", "what is snow", "what is coal"]
    for record in records:
        assert record["reward"] >= record["mean_reward"]
    assert rejection_sample(config) == manifest  # a finished run is skipped


def test_config_errors():
    with pytest.raises(HerdError, match="policy is empty"):
        RejectionSamplingConfig(reward_model="r", prompts="p")
    with pytest.raises(HerdError, match="temperature must be positive"):
        RejectionSamplingConfig(policy="m", reward_model="r", prompts="p", temperature=0)
