"""Document-masked attention on CUDA through torch's FlexAttention.

SDPA takes a document mask only as a dense [B, 1, T, T] tensor, which rules out its flash kernel and reads the whole
mask for every head; FlexAttention builds a block-sparse mask from the document ids and skips the blocks no query
may see (across documents, and in the causal future), in one fused kernel forward and backward. That is how packed
rows are trained on GPUs (torchtitan's "block_causal" masks do the same). On CPU, torch 2.13's FlexAttention has no
backward pass, so CPU training keeps herd.model.blocked_attention and SDPA.

flex_attention is compiled on its own, at first use (eager, it materializes every score), so it runs fused whether
or not the blocks around it are compiled. The BlockMask is built once per batch and shared by every layer, by a
compiled create_block_mask, which never materializes the [B, T, T] mask (as torch's documentation advises).
"""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from herd.model.lazy_compile import compiled
from herd.model.masking import shared_prefix

FLEX_DEVICES = ("cuda",)
"""Device types whose packed (document-masked) rows run through FlexAttention."""


def flex_applies(device: torch.device) -> bool:
    """Whether document masks on `device` are built as a BlockMask and run through FlexAttention."""
    return device.type in FLEX_DEVICES


def document_block_mask(doc_ids: torch.Tensor) -> BlockMask:
    """The causal, same-document mask of packed rows with per-token document ids [B, T], shared prefixes included, as
    a FlexAttention BlockMask (the same pattern as herd.model.masking.document_mask)."""
    batch, length = doc_ids.shape
    prefix = shared_prefix(doc_ids)

    def same_document_causal(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return (q >= kv) & ((doc_ids[b, q] == doc_ids[b, kv]) | (prefix[b, q] == doc_ids[b, kv]))

    return compiled(create_block_mask)(same_document_causal, batch, None, length, length, device=doc_ids.device)


def flex_document_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    """Softmax attention of q [B, H, T, D] over k, v [B, KV, T, D] (H a multiple of KV) under `block_mask`."""
    return compiled(flex_attention)(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])
