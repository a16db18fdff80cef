"""The paged KV cache: per-layer key/value slots addressed as block * block_size + offset, and `PagedContext`, the
attention context an engine step runs `Transformer.forward` with: it writes the new keys/values into their slots
and attends each group of rows over its context gathered from its blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from herd.model import ModelConfig
from herd.model.attention import sdpa


class PagedKV:
    """Keys and values [num_blocks * block_size, n_kv_heads, head_dim] for every layer."""

    def __init__(
        self, config: ModelConfig, num_blocks: int, block_size: int, *, dtype: torch.dtype, device: torch.device,
        kv_heads: int | None = None,
    ) -> None:
        """`kv_heads`: heads cached (default all of the config's; a tensor-parallel rank caches its own)."""
        shape = (num_blocks * block_size, kv_heads or config.kv_heads, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.block_size = block_size


@dataclass
class PagedGroup:
    """Rows [B] of `new` tokens each, written at `write` slots [B, new], attending over the first `length` slots of
    their blocks `blocks` [B, W] (rows with fewer blocks padded with any block) under `mask` (None: causal)."""

    write: torch.Tensor
    blocks: torch.Tensor
    length: int
    mask: torch.Tensor | None


class PagedContext:
    """One engine step's attention context on `PagedKV`: the step's new tokens as one row [1, N], the groups' rows
    one after another; each group attends on its own (a prefill chunk, or decodes of similar context length)."""

    def __init__(self, kv: PagedKV, positions: torch.Tensor, groups: list[PagedGroup]) -> None:
        self.kv, self.positions, self.groups = kv, positions, groups

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The `AttentionContext` contract, on q [1, N, H, D] and k, v [1, N, KV, D]."""
        keys, values = self.kv.keys[layer_id], self.kv.values[layer_id]
        outs, first = [], 0
        for group in self.groups:
            rows, new = group.write.shape
            span = slice(first, first + rows * new)
            first += rows * new
            flat = group.write.reshape(-1)
            keys.index_copy_(0, flat, k[0, span])
            values.index_copy_(0, flat, v[0, span])
            qg = q[0, span].view(rows, new, *q.shape[2:]).transpose(1, 2)
            out = sdpa(qg, self._context(keys, group), self._context(values, group), group.mask)
            outs.append(out.transpose(1, 2).reshape(rows * new, *q.shape[2:]))
        return (torch.cat(outs) if len(outs) > 1 else outs[0])[None]

    def _context(self, cache: torch.Tensor, group: PagedGroup) -> torch.Tensor:
        """The group's rows' keys or values [B, KV, length, D], gathered from their blocks."""
        # Whole blocks through index_select: a row copy per block, many times faster than indexing slot by slot.
        batch, width = group.blocks.shape
        size = self.kv.block_size
        blocks = cache.view(-1, size, *cache.shape[1:]).index_select(0, group.blocks.reshape(-1))
        return blocks.view(batch, width * size, *cache.shape[1:])[:, : group.length].transpose(1, 2)
