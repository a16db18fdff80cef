"""Group-baseline policy optimization (GRPO, DeepSeekMath): `grpo(config)` trains the policy without a value model,
for verifiable rewards such as arithmetic answers (reward=arithmetic).

Each prompt gets group_size sampled completions; a completion's advantage is its reward minus its group's mean,
over the group's standard deviation (+ 1e-4), on every one of its tokens. The loss is PPO's clipped policy loss
plus kl_coef x the per-token k3 KL to the reference, averaged over the completion tokens of an optimizer step
(DAPO's token-level mean; TRL's loss_type="bnpo" for one micro-batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import nn

from herd.checkpoint import save
from herd.errors import HerdError
from herd.post.logps import token_logps
from herd.post.ppo import clipped_policy_loss
from herd.post.rollout import (
    KLEstimator,
    RLConfig,
    Rollout,
    completion_targets,
    kl_penalty,
    start_rl,
    sum_metrics,
    train_rl,
)
from herd.post.stage import PostResult, export_trained, finished
from herd.train.losses import Batch, LossOutput

STD_EPS = 1e-4


@dataclass
class GRPOConfig(RLConfig):
    """A GRPO run: the RLConfig fields with group defaults (DeepSeekMath's beta 0.04, the k3 KL in the loss)."""

    out_dir: str = "runs/grpo"
    """Run directory."""
    reward: str = "arithmetic"
    """model | arithmetic | package.module:function (see RLConfig)."""
    group_size: int = 8
    """Completions per prompt; their mean and spread are the baseline."""
    kl_coef: float = 0.04
    """Weight of the per-token KL to the reference in the loss."""
    kl_estimator: KLEstimator = "k3"
    """k3 (as DeepSeekMath) or k1; see RLConfig."""
    scale: Literal["group", "none"] = "group"
    """group: divide by the group's reward std; none: only subtract the mean (Dr. GRPO)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_size < 2:
            raise HerdError(f"group_size must be at least 2 (the group's mean is the baseline), got {self.group_size}")


def group_advantages(scores: torch.Tensor, group_size: int, scale: Literal["group", "none"] = "group") -> torch.Tensor:
    """(reward - group mean) / (group std + 1e-4) of each sequence [N], groups being consecutive runs of group_size;
    the std is unbiased, as TRL computes it."""
    groups = scores.view(-1, group_size)
    centred = groups - groups.mean(1, keepdim=True)
    if scale == "group":
        centred = centred / (groups.std(1, keepdim=True) + STD_EPS)
    return centred.flatten()


def grpo_token_losses(
    logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor, advantages: torch.Tensor,
    clip_eps: float, kl_coef: float, estimator: KLEstimator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss, per-token KL) [N, L] from log-probs [N, L] and per-sequence advantages [N]."""
    kl = kl_penalty(logps, ref_logps, estimator)
    return clipped_policy_loss(logps, old_logps, advantages[:, None], clip_eps) + kl_coef * kl, kl


def grpo_loss(policy: nn.Module, batch: Batch, *, clip_eps: float, kl_coef: float, estimator: KLEstimator) -> LossOutput:
    """The summed GRPO loss over the completion tokens of a prepared minibatch (see `prepare_grpo`)."""
    tokens, mask, old_logps, ref_logps, advantages, scores = batch
    logps = token_logps(policy, *completion_targets(tokens, mask))
    losses, kl = grpo_token_losses(logps, old_logps, ref_logps, advantages, clip_eps, kl_coef, estimator)
    return LossOutput((losses * mask).sum(), int(mask.sum()), sum_metrics(mask, scores, kl=kl))


def prepare_grpo(rollout: Rollout, config: GRPOConfig) -> Batch:
    """A rollout's per-sequence tensors for `grpo_loss`: ids, mask, old and reference log-probs, advantages, scores."""
    advantages = group_advantages(rollout.scores, config.group_size, config.scale)
    return rollout.tokens, rollout.mask, rollout.logps, rollout.ref_logps, advantages, rollout.scores


def grpo(config: GRPOConfig) -> PostResult:
    """Train `config.model` with GRPO; the final policy goes to out_dir/model (herd format)."""
    done = finished(config)
    if done is not None:
        return done
    run = start_rl(config)
    loss_fn = partial(grpo_loss, clip_eps=config.clip_eps, kl_coef=config.kl_coef, estimator=config.kl_estimator)
    export = partial(export_trained, run.policy, config, partial(save, run.policy, run.tok))
    return train_rl(config, "grpo", run, run.policy, loss_fn, partial(prepare_grpo, config=config), export)
