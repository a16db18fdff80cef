"""One engine step's forward: the model's own blocks run over segments of many sequences on the paged cache.

The `Transformer`'s layers are reused as they are; only the loop around them is the engine's, since a paged
step has per-row positions and contexts: `PagedView` stands in for the dense `KVCache` (it has the same
`update` contract), so every numeric path (norms, RoPE, GQA attention, SwiGLU, quantized linears) is the model's.
One-token segments (decodes) run as one batch; each longer prefill chunk runs as its own row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from herd.model import Transformer
from herd.model.rope import rope_cos_sin
from herd.serve.paged_cache import PagedKV, PagedView


@dataclass
class Segment:
    """New tokens of one sequence for this step, at positions start.., in the blocks of `block_table`."""

    tokens: list[int]
    start: int
    block_table: list[int]
    wants_logits: bool
    """Whether the step samples after it (the segment ends the sequence's known tokens)."""


@torch.inference_mode()
def run_segments(
    model: Transformer, kv: PagedKV, segments: Sequence[Segment]
) -> tuple[list[int], torch.Tensor | None]:
    """Write every segment's keys/values into the cache; return the indices of the segments that want logits
    and their next-token logits [N, vocab] in that order (None when none does)."""
    decodes = [i for i, s in enumerate(segments) if len(s.tokens) == 1]
    groups = [decodes] if decodes else []
    groups += [[i] for i, s in enumerate(segments) if len(s.tokens) > 1]
    indices, hidden = [], []
    for group in groups:
        rows = [segments[i] for i in group]
        wanted = [j for j, row in enumerate(rows) if row.wants_logits]
        last = _forward(model, kv, rows)
        if wanted:
            indices += [group[j] for j in wanted]
            hidden.append(last[wanted])
    return indices, model.output(model.norm(torch.cat(hidden))) if hidden else None


def _forward(model: Transformer, kv: PagedKV, rows: list[Segment]) -> torch.Tensor:
    """Hidden states [B, dim] at the last new token of each row (all rows have the same number of new tokens)."""
    device = model.rope_freqs.device
    length = len(rows[0].tokens)
    tokens = torch.tensor([row.tokens for row in rows], device=device)
    starts = torch.tensor([row.start for row in rows], device=device)
    positions = starts[:, None] + torch.arange(length, device=device)
    context = max(row.start for row in rows) + length
    blocks = _block_table([row.block_table for row in rows], -(-context // kv.block_size), device)
    slots = blocks[:, :, None] * kv.block_size + torch.arange(kv.block_size, device=device)
    write = slots.reshape(len(rows), -1).gather(1, positions)
    # A key is visible to a query at its position or before; that also hides the padding past a short row's end.
    mask = None
    if len(rows) > 1 or rows[0].start > 0:
        unseen = (torch.arange(context, device=device) > positions[:, :, None])[:, None]
        # Additive, so SDPA does not convert a boolean mask again in every layer.
        mask = torch.zeros(unseen.shape, dtype=model.tok_embeddings.weight.dtype, device=device)
        mask.masked_fill_(unseen, float("-inf"))
    cos, sin = rope_cos_sin(model.rope_freqs, positions)
    view = PagedView(kv, write, blocks, context)
    hidden = model.tok_embeddings(tokens)
    for layer in model.layers:
        hidden = layer(hidden, cos, sin, mask, view)
    return hidden[:, -1]


def _block_table(tables: list[list[int]], width: int, device: torch.device) -> torch.Tensor:
    """The first `width` block ids of each row [B, width] (block 0 past a row's blocks)."""
    blocks = torch.zeros(len(tables), width, dtype=torch.long)
    for row, table in enumerate(tables):
        blocks[row, : min(width, len(table))] = torch.tensor(table[:width], dtype=torch.long)
    return blocks.to(device)
