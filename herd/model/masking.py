"""Attention masks and positions: document masks for packed rows, padding-aware cache masks.

Masks are boolean [B, 1, T_query, T_key] with True where attention is allowed (SDPA's convention); FlexAttention's
document masks are BlockMasks instead (herd.model.flex_attention).
"""

from __future__ import annotations

import torch


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Positions [B, T] that restart at 0 at the start of every document in a packed row."""
    batch, length = doc_ids.shape
    index = torch.arange(length, device=doc_ids.device).expand(batch, length)
    starts = torch.zeros_like(index)
    starts[:, 1:] = torch.where(doc_ids[:, 1:] != doc_ids[:, :-1], index[:, 1:], 0)
    return index - starts.cummax(dim=1).values


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Causal mask that also forbids attention across documents of a packed row."""
    length = doc_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same_doc & causal)[:, None]


def cache_mask(pad: torch.Tensor, start: int | torch.Tensor, new: int, key_len: int | None = None) -> torch.Tensor:
    """Mask for `new` queries at slots start.. over keys 0..key_len (default start+new), skipping left padding.

    With `start` a 1-element tensor and `key_len` the cache size, every shape is static (compiled decoding):
    causality then also hides the cache slots not written yet.
    """
    keys = torch.arange(start + new if key_len is None else key_len, device=pad.device)
    queries = start + torch.arange(new, device=pad.device)
    causal = keys[None, :] <= queries[:, None]
    not_pad = keys[None, :] >= pad[:, None]
    # A padding query sees only itself, so no row is fully masked (that would give NaN).
    itself = keys[None, :] == queries[:, None]
    return (causal[None] & (not_pad[:, None, :] | itself[None]))[:, None]


def cache_positions(pad: torch.Tensor, start: int | torch.Tensor, new: int) -> torch.Tensor:
    """RoPE positions [B, new] of new tokens at slots start.., counted from each row's first real token."""
    slots = start + torch.arange(new, device=pad.device)
    return (slots[None, :] - pad[:, None]).clamp(min=0)
