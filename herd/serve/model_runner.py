"""One engine step's scheduling turned into tensors: decodes and prefill chunks of many sequences in one forward.

Every new token of the step is one row of the residual stream [1, N, dim], so the step makes one pass over the
weights and one round of per-layer calls however many sequences prefill in it. Attention alone runs per group on
the paged cache (`PagedContext`): each prefill chunk on its own, and the decodes in a few groups of similar context
length, so a short context is not padded to the longest one. This module chooses the groups and builds their
slots, block tables and masks; the model's own `Transformer.forward` runs the step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from herd.model import Transformer
from herd.serve.paged_cache import PagedContext, PagedGroup, PagedKV


@dataclass
class Segment:
    """New tokens of one sequence for this step, at positions start.., in the blocks of `block_table`."""

    tokens: list[int]
    start: int
    block_table: list[int]
    wants_logits: bool
    """Whether the step samples after it (the segment ends the sequence's known tokens)."""


@torch.inference_mode()
def run_segments(model: Transformer, kv: PagedKV, segments: Sequence[Segment]) -> tuple[list[int], torch.Tensor | None]:
    """Write every segment's keys/values into the cache; return the indices of the segments that want logits
    and their next-token logits [N, vocab] in that order (None when none does)."""
    if not segments:
        return [], None
    if model.tp is not None and model.tp.rank == 0:  # every rank runs the step rank 0 scheduled
        model.tp.broadcast_object(list(segments))
    decodes = sorted((i for i, s in enumerate(segments) if len(s.tokens) == 1), key=lambda i: segments[i].start)
    prefills = [i for i, s in enumerate(segments) if len(s.tokens) > 1]
    order = decodes + prefills
    cuts = _cuts([segments[i].start // kv.block_size + 1 for i in decodes])
    groups = [[segments[i] for i in decodes[a:b]] for a, b in itertools.pairwise(cuts)] + [
        [segments[i]] for i in prefills
    ]
    device = model.rope_freqs.device
    tokens = torch.tensor([t for i in order for t in segments[i].tokens], device=device)
    positions = torch.tensor(
        [segments[i].start + j for i in order for j in range(len(segments[i].tokens))], device=device
    )
    context = PagedContext(kv, positions, [_plan(model, kv, rows) for rows in groups])
    hidden = model(tokens[None], context=context, head=False)
    ends, indices, offset = [], [], 0
    for i in order:
        offset += len(segments[i].tokens)
        if segments[i].wants_logits:
            ends.append(offset - 1)
            indices.append(i)
    if not ends:
        return [], None
    return indices, model.logits(hidden[0, ends])


def follow_steps(model: Transformer, kv: PagedKV) -> None:
    """A tensor-parallel rank other than 0: run each step rank 0's engine broadcasts, until `end_steps`. The cache
    blocks are rank 0's scheduler's, so freeing a request there frees its blocks on every rank."""
    while (segments := model.tp.broadcast_object()) is not None:
        run_segments(model, kv, segments)


def end_steps(model: Transformer) -> None:
    """Rank 0 of a tensor-parallel engine: release the other ranks from `follow_steps`."""
    if model.tp is not None and model.tp.rank == 0:
        model.tp.broadcast_object(None)


def _cuts(widths: list[int]) -> list[int]:
    """Where to split decodes sorted by context (`widths` in blocks) into attention groups: 0, ..., len(widths).

    A group gathers and attends over its longest context for every row; each group also costs a few calls per
    layer, counted as `_GROUP_COST` block-rows. The split minimising the total is found by dynamic programming.
    """
    best, back = [0] + [float("inf")] * len(widths), [0] * (len(widths) + 1)
    for end in range(1, len(widths) + 1):
        for start in range(end):
            cost = best[start] + (end - start) * widths[end - 1] + _GROUP_COST
            if cost < best[end]:
                best[end], back[end] = cost, start
    cuts = [len(widths)]
    while cuts[-1]:
        cuts.append(back[cuts[-1]])
    return cuts[::-1]


_GROUP_COST = 8
"""One more attention group per layer (a gather and an SDPA call) costs about as much on a CPU as gathering and
attending over this many blocks of one row more."""


def _plan(model: Transformer, kv: PagedKV, rows: list[Segment]) -> PagedGroup:
    """Write slots, block table, context and mask of rows that all have the same number of new tokens."""
    device = model.rope_freqs.device
    length = len(rows[0].tokens)
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
    return PagedGroup(write, blocks, context, mask)


def _block_table(tables: list[list[int]], width: int, device: torch.device) -> torch.Tensor:
    """The first `width` block ids of each row [B, width] (block 0 past a row's blocks)."""
    blocks = torch.zeros(len(tables), width, dtype=torch.long)
    for row, table in enumerate(tables):
        blocks[row, : min(width, len(table))] = torch.tensor(table[:width], dtype=torch.long)
    return blocks.to(device)
