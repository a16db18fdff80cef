"""The paged KV cache's storage: per-layer key/value slots addressed as block * block_size + offset.

`PagedView` is what one forward hands the model's attention layers in place of a dense `KVCache`: its `update`
writes the new keys/values into their slots and returns each row's context gathered from its blocks.
"""

from __future__ import annotations

import torch

from herd.model import ModelConfig


class PagedKV:
    """Keys and values [num_blocks * block_size, n_kv_heads, head_dim] for every layer."""

    def __init__(
        self, config: ModelConfig, num_blocks: int, block_size: int, *, dtype: torch.dtype, device: torch.device
    ) -> None:
        shape = (num_blocks * block_size, config.kv_heads, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.block_size = block_size


class PagedView:
    """One forward's window on `PagedKV`: rows [B] of new tokens [T] written at `write` slots [B, T],
    attending over the first `length` slots of their blocks `blocks` [B, W] (rows with fewer blocks padded
    with any block and masked out)."""

    def __init__(self, kv: PagedKV, write: torch.Tensor, blocks: torch.Tensor, length: int) -> None:
        self.kv, self.write, self.blocks, self.length = kv, write, blocks, length

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, T, D]; return the rows' contexts [B, H, L, D] (the `KVCache.update` contract)."""
        flat = self.write.reshape(-1)
        keys, values = self.kv.keys[layer], self.kv.values[layer]
        keys.index_copy_(0, flat, k.transpose(1, 2).reshape(flat.numel(), *keys.shape[1:]))
        values.index_copy_(0, flat, v.transpose(1, 2).reshape(flat.numel(), *values.shape[1:]))
        return self._context(keys), self._context(values)

    def _context(self, cache: torch.Tensor) -> torch.Tensor:
        # Whole blocks through index_select: a row copy per block, many times faster than indexing slot by slot.
        batch, width = self.blocks.shape
        size = self.kv.block_size
        blocks = cache.view(-1, size, *cache.shape[1:]).index_select(0, self.blocks.reshape(-1))
        return blocks.view(batch, width * size, *cache.shape[1:])[:, : self.length].transpose(1, 2)
