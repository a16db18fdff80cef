"""Proximal policy optimization: `ppo(config)` trains the policy and a value model on rollouts scored by a reward
model or a verifiable reward, with the KL to the frozen reference as a per-token penalty in the reward.

Per rollout: values of every completion position, rewards r_t = -kl_coef * KL_t plus the score at the last
token, GAE advantages (whitened over the rollout) and returns; then `epochs` passes of minibatches, each
minimising the clipped policy loss plus value_coef x the clipped value loss, averaged over completion tokens.
The clipped losses are also what GRPO (`herd.post.grpo`) minimises.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from herd.checkpoint import load, save
from herd.errors import HerdError
from herd.model import Transformer
from herd.post.logps import token_logps
from herd.post.reward_model import RewardModel, load_reward_model, save_reward_model
from herd.post.rollout import (
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


@dataclass
class PPOConfig(RLConfig):
    """A PPO run: the RLConfig fields plus the value model and GAE."""

    out_dir: str = "runs/ppo"
    """Run directory: the policy goes to model/, the value model to value/."""
    value_model: str = ""
    """A reward model directory (`herd rm`'s model/) to start the value model from; empty: `model`'s backbone with
    a scalar head at zero."""
    gamma: float = 1.0
    """Discount over completion tokens."""
    lam: float = 0.95
    """GAE's lambda: 0 is the one-step TD advantage, 1 the Monte Carlo return minus the value."""
    value_clip: float = 0.2
    """New values are clipped to old value +- value_clip in the clipped value loss."""
    value_coef: float = 0.1
    """Weight of the value loss in the step's loss."""
    epochs: int = 4
    """Passes over each rollout."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise HerdError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.value_clip <= 0 or self.value_coef < 0:
            raise HerdError(f"value_clip must be positive and value_coef 0 or more, got {self.value_clip}, {self.value_coef}")


class PolicyAndValue(nn.Module):
    """The two models PPO trains, as one module so the shared loop steps and checkpoints both."""

    def __init__(self, policy: Transformer, value: RewardModel) -> None:
        super().__init__()
        self.policy, self.value = policy, value

    def values(self, inputs: torch.Tensor) -> torch.Tensor:
        """The value model's estimate at every position [N, T] (fp32): the return expected after that prefix."""
        return self.value.backbone(inputs)[..., 0].float()


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) [N, L] by generalised advantage estimation over the masked (completion) positions:
    delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}, with V and A past the last one 0;
    returns = A + V. Both are 0 off the mask."""
    advantages = torch.zeros_like(rewards)
    running = next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(mask[:, t], delta + gamma * lam * running, 0.0)
        next_value = torch.where(mask[:, t], values[:, t], 0.0)
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`values` shifted and scaled to mean 0, variance 1 over the masked positions (0 elsewhere)."""
    chosen = values[mask]
    if chosen.numel() < 2:
        return (values - chosen.mean()) * mask if chosen.numel() else values
    return (values - chosen.mean()) * torch.rsqrt(chosen.var() + 1e-8) * mask


def clipped_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """PPO's per-token policy loss max(-A r, -A clip(r, 1 - eps, 1 + eps)) with r = pi / pi_old."""
    ratio = torch.exp(logps - old_logps)
    return torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps))


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's per-token value loss 0.5 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)


def ppo_loss(model: PolicyAndValue, batch: Batch, *, clip_eps: float, value_clip: float, value_coef: float) -> LossOutput:
    """The summed PPO loss over the completion tokens of a prepared minibatch (see `prepare_ppo`)."""
    tokens, mask, old_logps, old_values, advantages, returns, scores = batch
    inputs, targets = completion_targets(tokens, mask)
    logps = token_logps(model.policy, inputs, targets)
    policy = clipped_policy_loss(logps, old_logps, advantages, clip_eps)
    value = clipped_value_loss(model.values(inputs), old_values, returns, value_clip)
    clipped = ((logps - old_logps).exp() - 1).abs() > clip_eps
    metrics = sum_metrics(mask, scores, policy_loss=policy, value_loss=value, clipped=clipped)
    return LossOutput(((policy + value_coef * value) * mask).sum(), int(mask.sum()), metrics)


@torch.no_grad()
def prepare_ppo(rollout: Rollout, model: PolicyAndValue, config: PPOConfig) -> Batch:
    """A rollout's per-sequence tensors for `ppo_loss`: ids, mask, old log-probs, old values, whitened GAE
    advantages, returns and scores."""
    device = next(model.value.parameters()).device
    inputs = rollout.tokens[:, :-1]
    values = torch.cat([model.values(inputs[i : i + config.batch_size].to(device)).cpu()
                        for i in range(0, inputs.shape[0], config.batch_size)]) * rollout.mask
    rewards = -config.kl_coef * kl_penalty(rollout.logps, rollout.ref_logps, config.kl_estimator) * rollout.mask
    last = rollout.mask.long().cumsum(1).argmax(1)  # each row's last completion position
    rewards[torch.arange(rewards.shape[0]), last] += rollout.scores
    advantages, returns = gae(rewards, values, rollout.mask, config.gamma, config.lam)
    return (rollout.tokens, rollout.mask, rollout.logps, values, whiten(advantages, rollout.mask), returns,
            rollout.scores)


def ppo(config: PPOConfig) -> PostResult:
    """Train `config.model` with PPO; the policy goes to out_dir/model (herd format), the value model to out_dir/value."""
    done = finished(config)
    if done is not None:
        return done
    run = start_rl(config)
    if config.value_model:
        value, _ = load_reward_model(config.value_model, run.device)
    else:
        backbone, _ = load(config.model, device=run.device, dtype=torch.float32)
        value = RewardModel(backbone)
        torch.nn.init.zeros_(backbone.output.weight)  # values start at 0: early advantages are the rewards' own
    model = PolicyAndValue(run.policy, value.train())
    loss_fn = partial(ppo_loss, clip_eps=config.clip_eps, value_clip=config.value_clip, value_coef=config.value_coef)

    def export(out: Path) -> Path:
        save_reward_model(value, run.tok, config.run_dir / "value")
        return export_trained(run.policy, config, partial(save, run.policy, run.tok), out)

    prepare = partial(prepare_ppo, model=model, config=config)
    return train_rl(config, "ppo", run, model, loss_fn, prepare, export)
