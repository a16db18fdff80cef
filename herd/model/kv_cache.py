"""The key/value cache for incremental decoding: preallocated per-layer tensors plus fill state.

Rows of a batch may be left-padded to a common prompt length; `pad` records how many slots of each
row are padding so attention skips them and RoPE positions start at 0 for every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from herd.model.config import ModelConfig


@dataclass
class KVCache:
    """Keys and values [B, n_kv_heads, max_len, head_dim] per layer, `length` slots filled."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    pad: torch.Tensor
    """Left-padding slots per row, LongTensor [B]."""
    length: int = 0
    padded: bool = field(init=False)
    """Whether any row is padded; kept on the host so a forward never waits on the device to learn it."""

    def __post_init__(self) -> None:
        self.padded = bool(self.pad.any())

    @classmethod
    def allocate(
        cls,
        config: ModelConfig,
        batch_size: int,
        max_len: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
        pad: torch.Tensor | None = None,
        kv_heads: int | None = None,
    ) -> KVCache:
        """Zeroed slots for `kv_heads` heads (default all of the config's; a tensor-parallel rank caches its own)."""
        shape = (batch_size, kv_heads or config.kv_heads, max_len, config.head_dim)
        keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        if pad is None:
            pad = torch.zeros(batch_size, dtype=torch.long, device=device)
        return cls(keys, values, pad.to(device))

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, T, D] after the filled slots; return all keys and values so far."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def write(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, slot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, 1, D] at `slot` (LongTensor [1]); return the whole cache (static shapes)."""
        self.keys[layer].index_copy_(2, slot, k)
        self.values[layer].index_copy_(2, slot, v)
        return self.keys[layer], self.values[layer]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop finished rows of the batch (rows: LongTensor of indices to keep)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.pad = self.pad.index_select(0, rows)
        self.padded = bool(self.pad.any())
