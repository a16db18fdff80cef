"""Rotary position embeddings (RoPE) with Llama 3.1's "llama3" frequency scaling.

Pairs are interleaved (dims 2i, 2i+1), as in Meta's checkpoints; HF's half-split layout is
handled by permuting q/k weights at conversion time, not here.
"""

from __future__ import annotations

import math

import torch

from herd.model.config import RopeScaling


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> torch.Tensor:
    """Inverse frequencies [head_dim/2] in fp32, scaled for long context when asked."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if scaling is None:
        return freqs
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / freqs
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * freqs / scaling.factor + smooth * freqs
    scaled = torch.where(wavelen > low_wavelen, freqs / scaling.factor, freqs)
    in_between = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(in_between, blended, scaled)


def rope_cos_sin(freqs: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [..., T, head_dim/2] for integer positions [..., T] (fp32)."""
    angles = positions.to(torch.float32)[..., None] * freqs.to(positions.device)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, H, D] by per-position angles; cos/sin are [T, D/2] or [B, T, D/2].

    Each pair (2i, 2i+1) is a complex number turned by e^(i angle): eagerly one complex multiply forward and one
    backward, as in Meta's reference, where the real-valued form costs about ten elementwise kernels each way. Under
    torch.compile without autograd (the compiled decode steps) the real-valued form, which inductor fuses into its
    kernels; complex ops it leaves outside them, each its own call (llama3-125m: 4 a layer)."""
    if torch.compiler.is_compiling() and not torch.is_grad_enabled():
        return _apply_rope_real(x, cos, sin)
    rotation = torch.complex(cos, sin)
    rotation = rotation[None, :, None, :] if rotation.dim() == 2 else rotation[:, :, None, :]
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


def _apply_rope_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` in real arithmetic: (a + bi)(c + di) = (ac - bd) + (ad + bc)i for each pair."""
    cos, sin = (t[None, :, None, :] if t.dim() == 2 else t[:, :, None, :] for t in (cos, sin))
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).type_as(x)
