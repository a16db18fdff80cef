"""Attention masks and positions: document masks for packed rows, padding-aware cache masks.

Masks are boolean [B, 1, T_query, T_key] with True where attention is allowed (SDPA's convention); FlexAttention's
document masks are BlockMasks instead (herd.model.flex_attention).

Packed rows may share a prefix among documents (herd.post.batches.pack_chats(share_prefixes=True)): a run of tokens
with a negative document id is a prefix that every document after it in the row (up to the next prefix) continues,
as if each had its own copy: they attend to it and their positions count on from its end. Under the causal mask this
is exact (a tree of depth two, one trunk and its branches), and each document costs only its own tokens.
"""

from __future__ import annotations

import torch


NO_PREFIX = torch.iinfo(torch.int64).max
"""shared_prefix's id for tokens that no prefix comes before (never a document id)."""


def _run_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Positions [B, T] that restart at 0 wherever the document id changes."""
    batch, length = doc_ids.shape
    index = torch.arange(length, device=doc_ids.device).expand(batch, length)
    starts = torch.zeros_like(index)
    starts[:, 1:] = torch.where(doc_ids[:, 1:] != doc_ids[:, :-1], index[:, 1:], 0)
    return index - starts.cummax(dim=1).values


def _last_prefix_token(doc_ids: torch.Tensor) -> torch.Tensor:
    """Index [B, T] of the last shared-prefix token (negative id) at or before each position; -1 where none."""
    index = torch.arange(doc_ids.shape[1], device=doc_ids.device).expand_as(doc_ids)
    return torch.where(doc_ids < 0, index, -1).cummax(dim=1).values


def shared_prefix(doc_ids: torch.Tensor) -> torch.Tensor:
    """The id [B, T] of the shared prefix each token's document continues (its own id for a prefix token), or
    NO_PREFIX where none comes before it."""
    last = _last_prefix_token(doc_ids)
    return torch.where(last >= 0, doc_ids.gather(1, last.clamp(min=0)), NO_PREFIX)


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Positions [B, T] that restart at 0 at the start of every document in a packed row; a document after a shared
    prefix counts on from the prefix's end."""
    positions = _run_positions(doc_ids)
    last = _last_prefix_token(doc_ids)
    prefix_len = torch.where(last >= 0, positions.gather(1, last.clamp(min=0)) + 1, 0)
    return torch.where(doc_ids >= 0, positions + prefix_len, positions)


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Causal mask that also forbids attention across documents of a packed row, except to the shared prefix that
    a document continues."""
    length = doc_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=doc_ids.device).tril()
    visible = (doc_ids[:, :, None] == doc_ids[:, None, :]) | (shared_prefix(doc_ids)[:, :, None] == doc_ids[:, None, :])
    return (visible & causal)[:, None]


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
