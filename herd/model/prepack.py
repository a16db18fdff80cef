"""Weights prepacked for oneDNN on CPU: reordered once into its blocked layout, then multiplied with
`torch.ops.mkldnn._linear_pointwise` (the reorder inductor's CPU freezing applies). Same math and dtype as
`x @ weight.T`, faster than `F.linear`, which multiplies the [out, in] weight as stored at every call. Serving
reorders its weights once (`herd.serve.packed`); the training loss reorders its head once a step.
"""

from __future__ import annotations

import torch


def can_prepack(weight: torch.Tensor) -> bool:
    """Whether `weight` can be prepacked: fp32 or bf16 on a CPU, with torch built with oneDNN."""
    return (
        weight.device.type == "cpu"
        and weight.dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
    )


def prepack(weight: torch.Tensor, rows_hint: int) -> torch.Tensor:
    """`weight` [out, in] in oneDNN's layout, tuned for `rows_hint` rows (any row count works)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)


def prepacked_matmul(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """x [rows, in] @ weight.T for a weight from `prepack`; no autograd."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, None, "none", [], "")
