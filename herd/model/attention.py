"""Attention contexts: how one forward's keys/values are stored and which of them each query sees.

`Transformer.forward` runs its blocks with one context; each layer's attention hands it the rotated queries, keys
and values of the new tokens and gets the attention output back. Here: training and scoring rows (`Rows`, causal
or document-masked) and herd.generate's contiguous cache (`CacheContext`); the serving engine's paged cache is
herd.serve.paged_cache.PagedContext. The kernel rows run on (`RowKernel`) is chosen when the model is built, moved
or switched between train and eval (`row_kernel`), not per call.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask

from herd.errors import HerdError
from herd.model.blocked_attention import MAX_LENGTH, blocked_attention
from herd.model.flex_attention import document_block_mask, flex_applies, flex_document_attention
from herd.model.kv_cache import KVCache
from herd.model.masking import cache_mask, cache_positions, document_mask, document_positions


class AttentionContext(Protocol):
    """What a forward's attention layers share: the new tokens' positions and where their keys/values go."""

    positions: torch.Tensor
    """RoPE positions of the new tokens, [T] or [B, T]."""

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries q [B, T, H, D] and keys/values k, v [B, T, KV, D] of the new tokens -> output [B, T, H, D]."""
        ...


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """torch SDPA of q [B, H, T, D] over k, v [B, KV, L, D]: under `mask`, else causal (a single query sees all)."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=mask is None and q.shape[2] > 1, enable_gqa=k.shape[1] != q.shape[1]
    )


class RowKernel:
    """Rows through SDPA, a document mask as a dense boolean [B, 1, T, T] (inference on any device)."""

    def document_mask(self, doc_ids: torch.Tensor) -> torch.Tensor | BlockMask:
        return document_mask(doc_ids)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | BlockMask | None):
        return sdpa(q, k, v, mask)


class CudaDenseRows(RowKernel):
    """Dense masks on CUDA (FlexAttention off): SDPA's CUDA kernels take a mask without GQA (memory-efficient) or GQA
    without a mask (flash); expanding the key-value heads keeps a fused kernel instead of the math one's
    [B, H, T, T] scores."""

    def __call__(self, q, k, v, mask):  # noqa: ANN001, ANN204 - as RowKernel
        if mask is not None and k.shape[1] != q.shape[1]:
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
        return sdpa(q, k, v, mask)


class FlexRows(RowKernel):
    """Document masks as FlexAttention BlockMasks, one fused kernel forward and backward (CUDA); causal rows SDPA."""

    def document_mask(self, doc_ids: torch.Tensor) -> BlockMask:
        return document_block_mask(doc_ids)

    def __call__(self, q, k, v, mask):  # noqa: ANN001, ANN204 - as RowKernel
        return flex_document_attention(q, k, v, mask) if isinstance(mask, BlockMask) else sdpa(q, k, v, mask)


class BlockedRows(RowKernel):
    """CPU training: herd.model.blocked_attention up to its longest length for the dtype, SDPA past it."""

    def __call__(self, q, k, v, mask):  # noqa: ANN001, ANN204 - as RowKernel
        if 1 < q.shape[2] <= MAX_LENGTH.get(q.dtype, 0):
            return blocked_attention(q, k, v, mask)
        return sdpa(q, k, v, mask)


def row_kernel(device: torch.device, training: bool) -> RowKernel:
    """The kernel for rows on `device`: FlexAttention where it runs document masks, the blocked kernel for CPU
    training (faster than SDPA's backward there; forward alone it is not, so CPU inference keeps SDPA)."""
    if flex_applies(device):
        return FlexRows()
    if device.type == "cuda":
        return CudaDenseRows()
    return BlockedRows() if training and device.type == "cpu" else RowKernel()


class Rows:
    """Whole rows [B, T] attending causally, within their documents when `doc_ids` [B, T] is given (positions then
    restart at each document); a row of one document takes the causal kernel, no mask built."""

    def __init__(self, kernel: RowKernel, length: int, device: torch.device, doc_ids: torch.Tensor | None = None):
        self.kernel, self.mask = kernel, None
        self.positions = torch.arange(length, device=device)
        if doc_ids is not None and bool(doc_ids.any()):  # doc_ids count from 0 in each row
            self.mask, self.positions = kernel.document_mask(doc_ids), document_positions(doc_ids)

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.kernel(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.mask).transpose(1, 2)


class CacheContext:
    """New tokens [B, T] after the filled slots of a `KVCache` (prefill, or an eager decode step); the caller
    advances `cache.length`. `at_slot` is the compiled decode step's form."""

    def __init__(self, cache: KVCache, length: int, device: torch.device) -> None:
        if cache.length + length > cache.max_len:
            raise HerdError(f"KV cache holds {cache.max_len} tokens; {cache.length + length} requested")
        self.cache, self.slot = cache, None
        if cache.padded:
            self.mask = cache_mask(cache.pad, cache.length, length)
            self.positions = cache_positions(cache.pad, cache.length, length)
        else:
            self.mask = None if cache.length == 0 or length == 1 else cache_mask(cache.pad, cache.length, length)
            self.positions = torch.arange(cache.length, cache.length + length, device=device)

    @classmethod
    def at_slot(cls, cache: KVCache, slot: torch.Tensor) -> CacheContext:
        """One token per row written at cache slot `slot` (LongTensor [1]), attending over the whole cache under a
        mask: every shape is static and nothing reads `cache.length`, so one compiled graph serves every step."""
        context = cls.__new__(cls)
        context.cache, context.slot = cache, slot
        context.mask = cache_mask(cache.pad, slot, 1, cache.max_len)
        context.positions = cache_positions(cache.pad, slot, 1)
        return context

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.slot is None:
            k, v = self.cache.update(layer_id, k, v)
        else:
            k, v = self.cache.write(layer_id, k, v, self.slot)
        return sdpa(q, k, v, self.mask).transpose(1, 2)
