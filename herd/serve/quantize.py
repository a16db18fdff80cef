"""int8 weight-only quantization for serving: every linear's weight as int8 with one fp scale per output channel.

The matmul is `herd.model.cpu_tuning.int8_matmul`: torch's int8-weight kernel on CPUs, elsewhere (or with the
plain path) it dequantizes, then multiplies.
"""

from __future__ import annotations

import torch
from torch import nn

from herd.model import Transformer
from herd.model.cpu_tuning import int8_matmul


class Int8Linear(nn.Module):
    """A bias-free linear with weight ~= int8 [out, in] * scale [out] (symmetric, per output channel)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer("weight", (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = int8_matmul(x.reshape(-1, self.in_features), self.weight, self.scale)
        return out.reshape(*x.shape[:-1], self.out_features)


@torch.no_grad()
def quantize_int8(model: Transformer) -> Transformer:
    """Replace the attention, feed-forward and output linears of `model` in place; returns it."""
    model.replace_linears(Int8Linear)
    return model
