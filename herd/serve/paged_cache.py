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
    attending over `context` slots [B, L] (rows shorter than L padded with any slot and masked out)."""

    def __init__(self, kv: PagedKV, write: torch.Tensor, context: torch.Tensor) -> None:
        self.kv, self.write, self.context = kv, write, context

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, T, D]; return the rows' contexts [B, H, L, D] (the `KVCache.update` contract)."""
        flat = self.write.reshape(-1)
        keys, values = self.kv.keys[layer], self.kv.values[layer]
        keys.index_copy_(0, flat, k.transpose(1, 2).reshape(flat.numel(), *keys.shape[1:]))
        values.index_copy_(0, flat, v.transpose(1, 2).reshape(flat.numel(), *values.shape[1:]))
        return keys[self.context].transpose(1, 2), values[self.context].transpose(1, 2)
