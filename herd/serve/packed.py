"""Prepacked linears for serving on CPU: each weight reordered once into oneDNN's blocked layout
(`herd.model.cpu_tuning.prepack`).

Faster than `F.linear` at a decode step's few rows (benchmarks/README.md; `benchmarks/serve_throughput.py` measures
the engine end to end). Serving only: the reordered weight has no autograd, so a packed model does inference,
never training. A packed linear may keep its plain weight too, for the engine's compiled one-request step
(herd.serve.compiled_step), whose one-row matmul kernel reads the plain layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from herd.model import Transformer
from herd.model.cpu_tuning import can_prepack, prepack, prepacked_matmul

_PACK_HINT = 16
"""The row count oneDNN tunes the layout for (a decode step's rows); any row count works, and 1..256 rows run near
their best."""

_ROW_BLOCK = 16
"""Rows go to oneDNN as a multiple of this plus a remainder below it. oneDNN (and ideep) cache a primitive for every
row count they see, so free row counts grew the serving soak's memory without bound; blocks keep the counts to
max_rows / 16 + 15 per weight shape."""


class PackedLinear(nn.Module):
    """A bias-free linear whose weight lives in oneDNN's reordered layout; with `keep_weight` also in its plain one,
    which a torch.compile'd forward multiplies with instead (inductor's kernels read plain weights)."""

    def __init__(self, linear: nn.Linear, keep_weight: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = prepack(linear.weight, _PACK_HINT)
        self.weight = linear.weight if keep_weight else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and torch.compiler.is_compiling():
            return F.linear(x, self.weight)
        flat = x.reshape(-1, self.in_features)
        rows = flat.shape[0]
        body = rows - rows % _ROW_BLOCK
        if 0 < body < rows:
            out = torch.cat([prepacked_matmul(flat[:body], self.packed), prepacked_matmul(flat[body:], self.packed)])
        else:
            out = prepacked_matmul(flat, self.packed)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def can_pack(model: Transformer) -> bool:
    """Whether `model`'s linears can be packed: plain linears whose dtype this CPU's oneDNN runs (`can_prepack`:
    fp32, and bf16 with AVX-512 or avx_ne_convert); otherwise the model serves its plain linears."""
    return isinstance(model.output, nn.Linear) and can_prepack(model.output.weight)


@torch.no_grad()
def pack_linears(model: Transformer, keep_weights: bool = False) -> Transformer:
    """Replace the attention, feed-forward and output linears of `model` in place (when `can_pack`); returns it.

    The output head gets its own packed copy, so a tied embedding keeps working. `keep_weights`: each packed linear
    keeps its plain weight as well (for the compiled step; a tied head's is the embedding, shared)."""
    if not can_pack(model):
        return model
    model.replace_linears(lambda linear: PackedLinear(linear, keep_weights))
    return model
