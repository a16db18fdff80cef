"""Weights prepacked for oneDNN on CPU: reordered once into its blocked layout, then multiplied with
`torch.ops.mkldnn._linear_pointwise` (the reorder inductor's CPU freezing applies). Same math and dtype as
`x @ weight.T`, faster than `F.linear`, which multiplies the [out, in] weight as stored at every call. Serving
reorders its weights once (`herd.serve.packed`); the training loss reorders its head once a step.

Only where the CPU runs oneDNN's kernels for the weight's dtype (`can_prepack`): bf16 needs avx512bw+vl+dq or
avx_ne_convert, which many AVX2-only CPUs (laptops, cloud VMs) lack; elsewhere callers take the plain `x @ weight.T`.
`HERD_CPU_PLAIN=1` forces the plain path, as on such a CPU.
"""

from __future__ import annotations

import functools
import os

import torch

PLAIN_ENV = "HERD_CPU_PLAIN"
"""Set to 1 to force the plain path on every CPU (read at each `can_prepack`, so tests can set it)."""


def plain_forced() -> bool:
    """Whether `PLAIN_ENV` forces the plain path."""
    return os.environ.get(PLAIN_ENV, "0") not in ("", "0")


def can_prepack(weight: torch.Tensor) -> bool:
    """Whether `weight` can be prepacked: fp32, or bf16 where the CPU has oneDNN's bf16 kernels, on a CPU torch
    built with oneDNN, unless the plain path is forced."""
    return weight.device.type == "cpu" and not plain_forced() and cpu_supports(weight.dtype)


@functools.cache
def cpu_supports(dtype: torch.dtype) -> bool:
    """Whether this CPU runs the prepacked kernels for `dtype` (decided once per process).

    bf16 asks torch's own check, the one its reorder raises on and inductor's oneDNN fusions consult
    (`torch._inductor.utils.is_mkldnn_bf16_supported`): oneDNN's effective ISA, so `ONEDNN_MAX_CPU_ISA=AVX2`
    lowers it as it lowers the kernels. (`torch.cpu._is_avx512_bf16_supported` reads CPUID alone, and asks for
    avx512_bf16, which the kernels do not need.)"""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def prepack(weight: torch.Tensor, rows_hint: int) -> torch.Tensor:
    """`weight` [out, in] in oneDNN's layout, tuned for `rows_hint` rows (any row count works); only where
    `can_prepack(weight)`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)


def prepacked_matmul(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """x [rows, in] @ weight.T for a weight from `prepack`; no autograd."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, None, "none", [], "")
