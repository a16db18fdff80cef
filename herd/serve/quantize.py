"""Weight-only quantization for serving: every linear's weight as int8 or fp8 (float8_e4m3fn) with one fp32 scale
per output channel.

int8's matmul is `herd.model.cpu_tuning.int8_matmul`: torch's int8-weight kernel on CPUs, elsewhere (or with the
plain path) it dequantizes, then multiplies. fp8 is storage: each matmul dequantizes the weight to the activations'
dtype (a fused fp8 GEMM needs per-tensor activation scales and Hopper-class GPUs; this path runs on any device
whose torch has the dtype). Under tensor parallelism each rank quantizes its own slice, so scales are per output
channel of the local slice: a row-parallel layer's partial products each dequantize exactly before the all-reduce
sums them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from herd.errors import HerdError
from herd.model import Transformer
from herd.model.cpu_tuning import int8_matmul

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448


def _channel_scale(weight: torch.Tensor, top: float) -> torch.Tensor:
    """fp32 scale per output row mapping the row's largest magnitude to `top`."""
    return weight.abs().amax(dim=1).clamp(min=1e-12) / top


class Int8Linear(nn.Module):
    """A bias-free linear with weight ~= int8 [out, in] * scale [out] (symmetric, per output channel)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = _channel_scale(weight, 127)
        self.register_buffer("weight", (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = int8_matmul(x.reshape(-1, self.in_features), self.weight, self.scale)
        return out.reshape(*x.shape[:-1], self.out_features)


class Fp8Linear(nn.Module):
    """A bias-free linear with weight ~= float8_e4m3fn [out, in] * scale [out], dequantized at each matmul."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = _channel_scale(weight, FP8_MAX)
        self.register_buffer("weight", (weight / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8))
        self.register_buffer("scale", scale)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)


QUANTIZED: dict[str, type[nn.Module]] = {"int8": Int8Linear, "fp8": Fp8Linear}


@torch.no_grad()
def quantize(model: Transformer, kind: str, device: torch.device | str | None = None) -> Transformer:
    """Replace the attention, feed-forward and output linears of `model` (whole, or a rank's slice) in place by
    `kind` ("int8" or "fp8") weight-only linears; returns it.

    With `device`, a model loaded on the host is quantized onto `device` one linear at a time (each moved there,
    quantized, its full-precision copy dropped), then the rest of it follows: the device never holds more than one
    full-precision linear, so a model whose bf16 slice would not fit it (405B at tp 8 on 80 GB) still loads.
    """
    if kind not in QUANTIZED:
        raise HerdError(f"unknown quantization {kind!r}; choose one of: {', '.join(QUANTIZED)}")
    target = torch.device(device) if device is not None else model.output.weight.device
    if kind == "fp8":
        try:
            torch.ones(1, device=target).to(FP8).float()
        except (RuntimeError, TypeError):
            raise HerdError(f"fp8 weights are not supported on {target} by this torch; use int8") from None
    make = QUANTIZED[kind]
    model.replace_linears(make if device is None else lambda linear: make(linear.to(target)))
    if device is not None:
        model.to(target)
    return model


def quantize_int8(model: Transformer) -> Transformer:
    """`quantize(model, "int8")`."""
    return quantize(model, "int8")
