"""CPU tuning: every private torch API herd uses for speed, behind one switch.

`HERD_CPU_PLAIN=1` turns every trick off; herd then runs the plain public-API path, which is the reference the
tricks are tested against (tests/model/test_cpu_features.py) and measured against (benchmarks/cpu_tuning.py; a trick
stays only where it gains at least 5%; benchmarks/README.md has the figures, and those of the tricks removed for
gaining less). The tricks:

- prepacked weights (`torch.ops.mkldnn`): a weight reordered once into oneDNN's blocked layout, the reorder
  inductor's CPU freezing applies, then multiplied with its linear kernel. Same math and dtype as `x @ weight.T`.
  Only where the CPU runs oneDNN's kernels for the weight's dtype (`can_prepack`): bf16 needs avx512bw+vl+dq or
  avx_ne_convert, which many AVX2-only CPUs (laptops, cloud VMs) lack.
- fp32 inference GEMMs of 16 rows or more (prefill, evals) and eager decode's one-row head through oneDNN's matmul
  on the plain weight (`linear`): torch's F.linear calls MKL's sgemm, which ran 2-4x slower on an AMD EPYC with
  AVX-512. The blocks' one-row products stay on MKL: oneDNN for those of 2 MiB or more took llama3-125m's eager step
  from 26.6 to 23.8 ms of CPU time on 1 thread, but on 2 threads (a loaded machine) from 3.7 to 4.1 s of wall time
  for 16 tokens (1.5 -> 1.9 s of CPU time): a quiet 2-thread measurement would have to show a gain first.
- the compiled decode step's inductor decompositions (`decode_backend`): a one-row matmul, a one-row int8
  weight-only matmul and a one-query attention written as fused multiply-sums, which inductor's vectorised reductions
  run at memory speed (in the instruction set inductor picks for this CPU, scalar C++ where it finds no vector one).
  int8 llama3-125m, 1 thread: 6.9 ms of CPU time a token compiled, 13.2 eager with torch's int8 kernel (a loaded
  machine: indicative).
- int8 weight-only matmul (`torch.ops.aten._weight_int8pack_mm`, as gpt-fast uses) on bf16 activations.
- the decode backend's graphs report the arguments dynamo calls them with (`capture_decode_graphs`), so the compiled
  decode step calls its graph itself after its first call (herd.generation.decode_step): llama3-125m int8, 1 thread,
  7.90 -> 7.06 ms of CPU time a token.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

PLAIN_ENV = "HERD_CPU_PLAIN"
"""Set to 1 to run the plain path on every CPU (read at each call, so tests can set it)."""


def plain_forced() -> bool:
    """Whether `PLAIN_ENV` turns the tricks off."""
    return os.environ.get(PLAIN_ENV, "0") not in ("", "0")


# --- prepacked weights (oneDNN) ----------------------------------------------------------------------------
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


# --- fp32 inference GEMMs through oneDNN ---------------------------------------------------------------------
_GEMM_BLOCK, _GEMM_MAX_ROWS = 16, 256
"""Rows go to oneDNN in chunks of a multiple of 16 up to 256 rows (the rest, under 16, to F.linear): oneDNN caches a
primitive (~0.7 MB) for every row count it sees, so a prompt's free length would grow memory by the hundreds of MB."""


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def linear(x: torch.Tensor, weight: torch.Tensor, one_row: bool = False) -> torch.Tensor:
    """`F.linear(x, weight)`; fp32 inference on 16 rows or more (with `one_row` on one row as well: the output head at
    the last position) runs oneDNN's matmul on the plain weight (its JIT kernels for this CPU; torch's F.linear calls
    MKL's sgemm, 2-4x slower on an AMD EPYC AVX-512, 1 thread: 35 vs 90-240 GFLOP/s at prefill shapes, and for the
    125M's head on one row 1.9x slower). Plain F.linear under autograd, autocast, torch.compile, `PLAIN_ENV` and for
    tensor subclasses (DTensor shards: oneDNN's op has no sharding rule)."""
    if torch.compiler.is_compiling() or type(x) is not torch.Tensor or type(weight) not in _PLAIN_TENSORS:
        # traced (the row count would only add guards), or DTensor shards (tensor parallelism)
        return F.linear(x, weight)
    rows = x.numel() // max(x.shape[-1], 1)
    if ((rows < _GEMM_BLOCK and not (one_row and rows == 1)) or x.dtype != torch.float32
            or weight.dtype != torch.float32 or x.device.type != "cpu"
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            or torch.is_autocast_enabled("cpu") or plain_forced() or not cpu_supports(torch.float32)):
        return F.linear(x, weight)
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    if rows <= _GEMM_MAX_ROWS and rows % _GEMM_BLOCK == 0 or rows == 1:
        return prepacked_matmul(flat, weight).view(*x.shape[:-1], weight.shape[0])
    out = torch.empty(rows, weight.shape[0], dtype=x.dtype)  # filled chunk by chunk: no second copy of a head's logits
    body = rows - rows % _GEMM_BLOCK
    for i in range(0, body, _GEMM_MAX_ROWS):
        out[i : min(i + _GEMM_MAX_ROWS, body)] = prepacked_matmul(flat[i : min(i + _GEMM_MAX_ROWS, body)], weight)
    out[body:] = F.linear(flat[body:], weight)
    return out.view(*x.shape[:-1], weight.shape[0])


# --- int8 weight-only matmul ---------------------------------------------------------------------------------
def int8_matmul(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [rows, in] @ (weight int8 [out, in] * scale [out]).T in x's dtype.

    On CPU, torch's int8-weight kernel on bf16 activations (its fast path; with fp32 activations it is slower
    than an fp32 matmul); plain: dequantize, then multiply."""
    if x.device.type == "cpu" and not plain_forced():
        bf16 = x.to(torch.bfloat16).contiguous()
        return torch.ops.aten._weight_int8pack_mm(bf16, weight, scale.to(torch.bfloat16)).to(x.dtype)
    return F.linear(x, weight.to(x.dtype)) * scale.to(x.dtype)


# --- the compiled decode step's kernels ----------------------------------------------------------------------
def decode_backend() -> str | Callable:
    """The torch.compile backend of the CPU decode step: inductor, with `_rowvec_matmul`, `_int8_rowvec_matmul` and
    `_one_query_attention` as its decompositions of one-row (int8) matmuls and one-query attention; plain inductor
    when the plain path is forced."""
    return "inductor" if plain_forced() else _decode_inductor


def _decode_inductor(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
    """Inductor with the decode step's decompositions.

    Without AOTAutograd's cache: its key leaves the decompositions out, so it would hand this graph plain inductor's
    kernels once a plain compile of it is on disk (and plain inductor these). Inductor's own FX-graph cache, keyed on
    the decomposed graph, serves a warm compile (in a later process too: see `_DecodeDecompositions`).
    Without the wrapper's size asserts: a step's model, cache and shapes stay those its first call, fully guarded,
    compiled for (herd.generation.decode_step), and llama3-125m's graph asserted 160 inputs a call: ~0.07 ms of CPU
    time (1 thread, a narrowed llama3-125m-shaped step 0.50 -> 0.42 ms, medians of 7 alternating, loaded machine)."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config
    from torch._inductor.compile_fx import compile_fx  # takes seconds: only when compiling

    with functorch_config.patch(enable_autograd_cache=False), inductor_config.patch(size_asserts=False):
        return _Captured(compile_fx(gm, example_inputs, decompositions=_DecodeDecompositions.build()))


_capture = threading.local()


@contextlib.contextmanager
def capture_decode_graphs() -> Iterator[list[tuple[Callable, tuple, object]]]:
    """The calls dynamo makes in the block to graphs the decode backend compiled, as (graph, arguments, outputs):
    dynamo passes a graph the tensors and sizes its inputs are (weights, cache, ids), so a caller whose inputs stay
    those can call the graph again itself, without dynamo's frame evaluation, guards and attribute walks
    (herd.generation.decode_step)."""
    calls: list[tuple[Callable, tuple, object]] = []
    _capture.calls = calls
    try:
        yield calls
    finally:
        _capture.calls = None


class _Captured:
    """A compiled graph that reports its calls inside `capture_decode_graphs` (elsewhere a plain call)."""

    def __init__(self, graph: Callable) -> None:
        self.graph = graph

    def __call__(self, *args: object) -> object:
        out = self.graph(*args)
        calls = getattr(_capture, "calls", None)
        if calls is not None:
            calls.append((self.graph, args, out))
        return out


class _DecodeDecompositions(dict):
    """Inductor's decomposition table with herd's decompositions, keyed for inductor's FX-graph cache by their
    source.

    The cache hashes the table by pickling it, and one of inductor's own entries is a C++ function that does not
    pickle: the cache would be skipped and every process would compile afresh. The rest of the table is inductor's
    for this torch version, which the key holds already."""

    @classmethod
    def build(cls) -> "_DecodeDecompositions":
        from torch._inductor.decomposition import select_decomp_table

        table = cls(select_decomp_table())
        table[torch.ops.aten.mm.default] = _rowvec_matmul
        table[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default] = _one_query_attention
        table[torch.ops.aten._weight_int8pack_mm.default] = _int8_rowvec_matmul
        return table

    def __reduce__(self) -> tuple[type, tuple[str]]:
        import inspect

        ours = (torch.ops.aten.mm.default, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
                torch.ops.aten._weight_int8pack_mm.default)
        return str, ("herd decode decompositions\n" + "".join(inspect.getsource(self[op]) for op in ours),)


def _rowvec_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [1, K] @ b [K, N] as a reduction over K, accumulated in fp32: inductor streams the weight at memory
    speed, where the BLAS matrix-vector product does not."""
    from torch._inductor import inductor_prims
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    if not statically_known_true(a.shape[0] == 1):
        return NotImplemented
    # Materialise the row first: inlined, its producer (an RMSNorm, say) would be recomputed for every column.
    row = inductor_prims.force_stride_order(a.float(), (a.shape[1], 1))
    return (row.view(-1, 1) * b).sum(dim=0, keepdim=True).to(b.dtype)


def _int8_rowvec_matmul(a: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`_weight_int8pack_mm`: a [M, K] @ (weight int8 [N, K] * scale [N]).T in fp32, rounded to a's dtype. One row as a
    reduction over K, which inductor streams one byte a weight; several rows as a dequantized matmul. (Inductor's own
    lowering of the op fails on torch 2.13 when its input is computed in the graph: 'LoweringException:
    AssertionError: <class 'torch._inductor.ir.Pointwise'>'.)"""
    from torch._inductor import inductor_prims
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    if not statically_known_true(a.shape[0] == 1):
        return (torch.mm(a.float(), weight.float().t()) * scale.float()).to(a.dtype)
    row = inductor_prims.force_stride_order(a.float(), (a.shape[1], 1))
    return ((row * weight.float()).sum(dim=1) * scale.float()).view(1, -1).to(a.dtype)


def _one_query_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA for one query per head ([B, H, 1, D], keys [B, H_kv, L, D]) in fp32, skipping the flash kernel's
    blocking set-up; (output, logsumexp)."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    if not statically_known_true(query.shape[2] == 1) or dropout_p or is_causal:
        return NotImplemented
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    grouped = query.float().reshape(batch, kv_heads, heads // kv_heads, 1, dim)
    scores = (grouped * key.float()[:, :, None]).sum(-1) * (dim**-0.5 if scale is None else scale)
    if attn_mask is not None:  # [B or 1, H or 1, 1, L]
        mask = attn_mask.expand(batch, heads, 1, length).reshape(scores.shape)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    out = (scores.softmax(-1)[..., None] * value.float()[:, :, None]).sum(-2)
    return out.reshape(batch, heads, 1, dim).to(query.dtype), scores.logsumexp(-1).reshape(batch, heads, 1)
