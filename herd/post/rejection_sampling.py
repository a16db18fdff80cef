"""Rejection sampling: `rejection_sample(config)` draws K replies per prompt from the policy (batched), scores
them with the reward model and keeps the best of each as new SFT data (JSONL of messages)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from herd.config_overrides import to_dict
from herd.errors import HerdError
from herd.generation import generate_tokens
from herd.model.tensor_parallel import init_tensor_parallel, parallelize
from herd.post.data import read_prompts
from herd.post.reward_model import load_reward_model
from herd.run_dir import atomic_open, read_manifest, write_manifest
from herd.train.distributed import pick_device

MANIFEST = "manifest.json"
OUTPUT = "sft.jsonl"


@dataclass
class RejectionSamplingConfig:
    """A rejection-sampling run: the policy, the reward model, prompts and the sampling settings."""

    out_dir: str = "runs/rejection-sampling"
    """Run directory: sft.jsonl (the best reply of each prompt, with its reward) and manifest.json."""
    policy: str = ""
    """The model to sample from: anything `herd.load` reads."""
    reward_model: str = ""
    """The reward model directory written by `herd rm` (its model/ folder)."""
    prompts: str = ""
    """Prompts: JSONL of {"prompt": ...} or {"messages": [...]} (a trailing assistant turn is dropped)."""
    samples_per_prompt: int = 10
    """K replies drawn per prompt (Llama 3 draws 10 to 30)."""
    temperature: float = 0.8
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_new_tokens: int = 256
    """Longest reply."""
    batch_size: int = 64
    """Sequences generated (and scored) together."""
    seed: int = 0
    """Seeds the sampling."""
    device: str = "auto"
    """cpu, cuda, ...; auto picks cuda when available."""
    progress: bool = True
    """Show a progress bar."""
    tp: int = 1
    """Tensor-parallel ranks (under torchrun, --nproc-per-node tp): the policy and the reward model are split over
    them, every rank samples the same replies, rank 0 writes the run directory."""

    def __post_init__(self) -> None:
        for name in ("policy", "reward_model", "prompts"):
            if not getattr(self, name):
                raise HerdError(f"{name} is empty; set {name}=...")
        for name in ("samples_per_prompt", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise HerdError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise HerdError(f"temperature must be positive (rejection sampling needs varied samples), got {self.temperature}")


def rejection_sample(config: RejectionSamplingConfig) -> dict[str, Any]:
    """Write out_dir/sft.jsonl and return the manifest: mean reward of all samples and of the kept ones."""
    from herd.checkpoint import load

    run_dir = Path(config.out_dir)
    done = read_manifest(run_dir / MANIFEST, to_dict(config))
    if done:
        return done
    started, device = time.time(), pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    group = init_tensor_parallel(config.tp, device)
    policy, tok = load(config.policy, device=device, tp=group)
    reward_model, _ = load_reward_model(config.reward_model, device)
    if group is not None:  # the reward model's own format, read whole, then cut
        parallelize(reward_model.backbone, group)
    prompts = read_prompts(config.prompts)
    k = config.samples_per_prompt
    jobs = [(p, s) for p in range(len(prompts)) for s in range(k)]
    prompt_ids = [tok.encode_dialog(prompt) for prompt in prompts]
    replies: list[list[int]] = []
    rewards: list[float] = []
    policy.eval()
    shown = not (group and group.rank)
    for start in tqdm(range(0, len(jobs), config.batch_size), desc="sample", disable=not (config.progress and shown)):
        batch = [prompt_ids[p] for p, _ in jobs[start : start + config.batch_size]]
        results = generate_tokens(
            policy, batch, max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
            seed=config.seed + start, stop_ids=tok.stop_ids,
        )
        replies += [r.tokens for r in results]
        with torch.inference_mode():
            rewards += reward_model.score([ids + r.tokens + [tok.eot_id] for ids, r in zip(batch, results)],
                                          config.batch_size, tok.eos_id)
    if group is not None:
        group.close()
    records = []
    for p, prompt in enumerate(prompts):
        scores = rewards[p * k : (p + 1) * k]
        best = max(range(k), key=scores.__getitem__)
        reply = tok.decode(replies[p * k + best])
        records.append({"messages": [*prompt, {"role": "assistant", "content": reply}], "reward": scores[best],
                        "mean_reward": sum(scores) / k})
    manifest = {
        "stage": "rejection-sample", "config": to_dict(config), "duration_s": time.time() - started,
        "prompts": len(prompts), "samples": len(jobs), "mean_sample_reward": sum(rewards) / len(rewards),
        "mean_kept_reward": sum(r["reward"] for r in records) / len(records), "output": str(run_dir / OUTPUT),
    }
    if not shown:
        return manifest
    with atomic_open(run_dir / OUTPUT) as out:
        out.writelines(json.dumps(record) + "\n" for record in records)
    return write_manifest(run_dir / MANIFEST, manifest)
