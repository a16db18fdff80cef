"""Per-token log-probs of targets under a model, LoRA adapters on or off: what DPO, PPO, GRPO and rollouts score."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from herd.post.lora import WithoutAdapters, adapters_disabled
from herd.train.fused_loss import linear_token_losses
from herd.train.losses import applies_its_head, token_cross_entropy, token_losses

Model = nn.Module | Callable[..., torch.Tensor]
"""A model, or something called like one (the base under LoRA adapters)."""


def token_logps(model: Model, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p of each target token [B, T] (fp32); 0 where the target is IGNORE_INDEX. A Transformer's head (a LoRA
    reference's too) goes a chunk of rows at a time (herd.train.fused_loss), never holding the whole logits; a
    tensor-parallel one (herd.model.tensor_parallel) on each rank's vocabulary rows, the logits never gathered."""
    if isinstance(model, WithoutAdapters):
        with adapters_disabled(model.model):
            return token_logps(model.model, tokens, targets)
    if not applies_its_head(model):
        return -token_cross_entropy(model(tokens), targets)
    if model.tp is None or not model.tp_head:
        return -token_losses(model, (tokens, targets, None))
    weight = model.output.weight
    shard = (dist.group.WORLD, model.tp.rank * weight.shape[0])
    return -linear_token_losses(model(tokens, head=False), weight, targets, vocab_shard=shard)
