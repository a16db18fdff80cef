"""int8 weight-only quantization for serving: every linear's weight as int8 with one fp scale per output channel.

On CPUs the matmul is torch's int8-weight kernel (`_weight_int8pack_mm`, as gpt-fast uses) on bf16 activations
(its fast path; with fp32 activations it is slower than fp32 matmul); elsewhere it dequantizes, then multiplies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from herd.model import Transformer


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
        flat = x.reshape(-1, self.in_features)
        if flat.device.type == "cpu":
            bf16 = flat.to(torch.bfloat16).contiguous()
            out = torch.ops.aten._weight_int8pack_mm(bf16, self.weight, self.scale.to(torch.bfloat16)).to(x.dtype)
        else:
            out = F.linear(flat, self.weight.to(flat.dtype)) * self.scale.to(flat.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


@torch.no_grad()
def quantize_int8(model: Transformer) -> Transformer:
    """Replace the attention, feed-forward and output linears of `model` in place; returns it."""
    model.replace_linears(Int8Linear)
    return model
