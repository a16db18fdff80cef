"""The optimizer every training stage uses (pretraining, SFT, DPO, reward models, RL), its step on scaled gradients
and its autocast dtype."""

from __future__ import annotations

import torch
from torch import nn

from herd.train.config import OptimConfig


def build_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linear and embedding weights) and none on norm gains.

    The fused kernel on CUDA and CPU where torch has one (one pass over all parameters), else foreach.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kernel = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, **kernel)


def step_scaled(optimizer: torch.optim.Optimizer, groups: list[list[nn.Parameter]], scale: torch.Tensor) -> None:
    """`optimizer.step()` on the gradients of `groups` times `scale` (`herd.train.distributed.clip_scale`'s)."""
    for group in groups:
        for param in group:
            param.grad.mul_(scale)
    optimizer.step()


def autocast_dtype_for(dtype: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU by default; fp32 (no autocast) on CPU by default."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if dtype == "bfloat16" else None
