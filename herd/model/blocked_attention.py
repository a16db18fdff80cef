"""Attention for CPU training as batched GEMMs over blocks of query positions.

Hand-written because torch's CPU flash-attention kernel is slow at the sequence lengths and head sizes small CPU
runs use, above all in the backward pass (benchmarks/README.md has the figures). Forward alone it is no faster, so
inference keeps SDPA. bf16 inputs (autocast training) are computed in fp32 and cast back, more exactly and, up to
`MAX_LENGTH`, faster than SDPA's bf16 kernel; GEMMs in bf16 gained less than the casts around them cost.

The queries of each key-value head are grouped, so one GEMM serves the whole group; a block of 64 positions sees the
keys up to its end only (causality skips the rest), and under a document mask none before its first query's document
(faster steps where rows hold several documents). The probabilities are kept for the backward pass instead of
recomputed (recomputing them costs more than the flash kernel saves), so memory grows with length squared: it is
used up to `MAX_LENGTH` tokens (past that, its small gain costs tens of MB per layer). torch.compile traces it
(`compile=true` keeps it; compiled, document masks do not skip keys, which would make shapes depend on the data).
"""

from __future__ import annotations

import torch

BLOCK = 64
"""Query positions per block: the fastest of 32, 64 and 128 at the lengths this runs (benchmarks/README.md)."""
MAX_LENGTH = {torch.float32: 1024, torch.bfloat16: 512}
"""The longest sequence, by input dtype, for which this is used instead of SDPA."""


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Causal softmax attention of q [B, H, T, D] over k, v [B, KV, T, D] (H a multiple of KV), as SDPA computes it
    with `is_causal=True` when mask is None, else with the boolean mask [B, 1, T, T] (True where attention is
    allowed): a causal one, such as a document mask, with no row fully masked. Returns [B, H, T, D] in q's dtype,
    computed in fp32."""
    return _BlockedAttention.apply(q.float(), k.float(), v.float(), mask).to(q.dtype)


def _grouped(x: torch.Tensor, kv_heads: int, scale: float = 1.0) -> torch.Tensor:
    """[B, H, T, D] -> [B * KV, T * G, D]: each key-value head's queries, rows ordered (position, head in group)."""
    batch, heads, length, dim = x.shape
    view = x.transpose(1, 2).reshape(batch, length, kv_heads, heads // kv_heads, dim).permute(0, 2, 1, 3, 4)
    grouped = view.clone(memory_format=torch.contiguous_format)
    if scale != 1.0:
        grouped.mul_(scale)
    return grouped.view(batch * kv_heads, length * (heads // kv_heads), dim)


def _first_key(block_mask: torch.Tensor) -> int:
    """The first key column [B, queries, keys] that any query may attend to."""
    return int(block_mask.any(dim=1).any(dim=0).int().argmax())


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)  # fp32 GEMMs under CPU autocast too
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        group = heads // kv_heads
        queries = _grouped(q, kv_heads, dim**-0.5)  # scaled once here instead of every score block
        keys, values = k.reshape(batch * kv_heads, length, dim), v.reshape(batch * kv_heads, length, dim)
        out = q.new_empty(batch, length, kv_heads, group, dim)
        causal = torch.ones(BLOCK, BLOCK, dtype=torch.bool, device=q.device).triu(1).repeat_interleave(group, 0)
        probs, firsts = [], []
        for start in range(0, length, BLOCK):
            end = min(start + BLOCK, length)
            # the first key any query of the block may see (under a document mask, where its first query's document
            # starts); compiled, all keys, so the graph has no data-dependent shapes
            first = 0 if mask is None or torch.compiler.is_compiling() else _first_key(mask[:, 0, start:end, :end])
            scores = torch.bmm(queries[:, start * group : end * group], keys[:, first:end].transpose(1, 2))
            if mask is None:  # only the block's own keys can lie in its future
                scores[:, :, start:].masked_fill_(causal[: (end - start) * group, : end - start], float("-inf"))
            else:
                hidden = ~mask[:, :, start:end, first:end].repeat_interleave(group, 2)
                scores.view(batch, kv_heads, *scores.shape[1:]).masked_fill_(hidden, float("-inf"))
            block_probs = torch.softmax(scores, dim=-1)
            out[:, start:end] = torch.bmm(block_probs, values[:, first:end]).view(
                batch, kv_heads, end - start, group, dim).transpose(1, 2)
            probs.append(block_probs)
            firsts.append(first)
        ctx.firsts = firsts
        ctx.save_for_backward(queries, keys, values, out, *probs)
        return out.view(batch, length, heads, dim).transpose(1, 2)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out: torch.Tensor):
        queries, keys, values, out, *probs = ctx.saved_tensors
        batch, length, kv_heads, group, dim = out.shape
        grad_rows = _grouped(grad_out, kv_heads)
        # softmax backward's row term: sum over d of grad_out * out, per query row
        delta = (grad_rows * out.permute(0, 2, 1, 3, 4).reshape(grad_rows.shape)).sum(-1)
        grad_q = out.new_empty(out.shape)
        grad_k, grad_v = torch.zeros_like(keys), torch.zeros_like(values)
        for index, (block_probs, first) in enumerate(zip(probs, ctx.firsts, strict=True)):
            start = index * BLOCK
            end = min(start + BLOCK, length)
            rows = slice(start * group, end * group)
            grad_v[:, first:end] += torch.bmm(block_probs.transpose(1, 2), grad_rows[:, rows])
            grad_scores = torch.bmm(grad_rows[:, rows], values[:, first:end].transpose(1, 2))
            grad_scores.sub_(delta[:, rows, None]).mul_(block_probs)
            grad_q[:, start:end] = torch.bmm(grad_scores, keys[:, first:end]).view(
                batch, kv_heads, end - start, group, dim).transpose(1, 2)
            grad_k[:, first:end] += torch.bmm(grad_scores.transpose(1, 2), queries[:, rows])
        grad_q = grad_q.mul_(dim**-0.5).view(batch, length, kv_heads * group, dim).transpose(1, 2)
        return grad_q, grad_k.view(batch, kv_heads, length, dim), grad_v.view(batch, kv_heads, length, dim), None
