"""The decode step of generation: the next logits for one new token per row through the KV cache.

Eager it is the model's cached forward; compiled it is `Transformer.decode_step` under torch.compile, with
CUDA graphs on GPUs and, on CPUs, inductor kernels of its own for one-row matmuls and one-query attention.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from herd.model import KVCache, Transformer

Step = Callable[[torch.Tensor], torch.Tensor]
"""ids [B, 1] -> next-token logits [B, vocab], appending the ids to the cache."""


def make_decode_step(model: Transformer, cache: KVCache, compile: bool) -> Step:
    """The step for `model` writing into `cache` (already prefilled), compiled or not."""
    if not compile:
        # Eager: the cached forward attends to the filled slots only.
        return lambda ids: model(ids, cache=cache)[:, -1]
    device = cache.pad.device
    compiled = _compiled_decode_step(device.type)
    slot = torch.tensor([cache.length], device=device)
    for tensor in cache.keys + cache.values:
        torch._dynamo.mark_dynamic(tensor, 2)  # one graph for every cache length, not one per prompt length
        if device.type == "cuda":
            torch._dynamo.mark_static_address(tensor)  # CUDA graphs write the cache where it is

    def step(ids: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()
        logits = compiled(model, ids, cache, slot)[:, -1]
        slot.add_(1)
        cache.length += 1
        return logits

    return step


@functools.cache
def _compiled_decode_step(device_type: str) -> Callable[..., torch.Tensor]:
    """`Transformer.decode_step` compiled for a device type; dynamo keeps its graphs across calls and models."""
    if device_type == "cuda":
        return torch.compile(Transformer.decode_step, mode="reduce-overhead")
    return torch.compile(Transformer.decode_step, backend=_cpu_inductor)


def _cpu_inductor(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
    """Inductor, with a one-row matmul and a one-query attention rewritten as fused multiply-sums.

    On CPUs inductor's vectorised reductions stream the weights at memory speed, about twice what the BLAS
    matrix-vector product reaches, and one-query attention skips the flash kernel's blocking set-up.
    """
    from torch._inductor.compile_fx import compile_fx  # takes seconds: only for compile=True
    from torch._inductor.decomposition import select_decomp_table

    table = dict(select_decomp_table())
    table[torch.ops.aten.mm.default] = _rowvec_matmul
    table[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default] = _one_query_attention
    return compile_fx(gm, example_inputs, decompositions=table)


def _rowvec_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [1, K] @ b [K, N] as a reduction over K, accumulated in fp32."""
    from torch._inductor import inductor_prims
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    if not statically_known_true(a.shape[0] == 1):
        return NotImplemented
    # Materialise the row first: inlined, its producer (an RMSNorm, say) would be recomputed for every column.
    row = inductor_prims.force_stride_order(a.float(), (a.shape[1], 1))
    return (row.view(-1, 1) * b).sum(dim=0, keepdim=True).to(b.dtype)


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
    """SDPA for one query per head ([B, H, 1, D], keys [B, H_kv, L, D]) in fp32; (output, logsumexp)."""
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
