"""Meta's checkpoint format: `params.json` + model-parallel shards `consolidated.NN.pth` (+ `tokenizer.model`).

Shards are merged on load by the split table below; save writes one shard that Meta's reference code reads, or
`mp` model-parallel shards cut by the same table (herd.checkpoint.sharded reads a rank's slice of either).
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from herd.checkpoint.files import one_line
from herd.errors import HerdError
from herd.model import ModelConfig, Transformer
from herd.model.tensor_parallel import SHARD_DIMS
from herd.run_dir import atomic_open, write_json
from herd.tokenizer import Tokenizer, load_tokenizer

PARAMS_FILE = "params.json"
SHARD_PATTERN = "consolidated.*.pth"
TOKENIZER_FILE = "tokenizer.model"

# Meta's shards are cut as herd's tensor-parallel ranks are (`SHARD_DIMS`: fairscale's column/row/vocab-parallel
# split of Llama 3; Llama 2's ParallelEmbedding split the embedding width instead, see `ShardLayout.of`).
# Tensors older Meta checkpoints carry that are not weights (Llama 2's precomputed RoPE frequencies).
NOT_WEIGHTS = frozenset({"rope.freqs"})


def weight_files(directory: Path) -> list[Path]:
    """The directory's shards in model-parallel rank order."""
    files = sorted(directory.glob(SHARD_PATTERN))
    if not files:
        raise HerdError(f"no weights in {directory}: expected {SHARD_PATTERN} files beside {PARAMS_FILE}")
    return files


def read_config(directory: Path) -> ModelConfig:
    return ModelConfig.from_json(directory / PARAMS_FILE)


def read_state(directory: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """herd-named tensors: memory-mapped from a single shard; merged from several, one shard mapped at a time
    (so the peak is the model plus one shard)."""
    files = weight_files(directory)
    first = read_shard(files[0])
    names = [name for name in first if name not in NOT_WEIGHTS]
    if len(files) == 1:
        return {name: first[name] for name in names}
    layouts = {name: ShardLayout.of(name, first[name], len(files), config) for name in names}
    merged = {name: torch.empty(layouts[name].shape, dtype=first[name].dtype) for name in names}
    keys = set(first)
    del first  # copied shard by shard below, with one shard's memory map open at a time
    for rank, file in enumerate(files):
        shard = read_shard(file)
        if shard.keys() != keys:
            odd = min(shard.keys() ^ keys)
            raise HerdError(f"shards {files[0].name} and {file.name} in {directory} disagree on tensor {odd}")
        for name in names:
            layouts[name].copy_piece(shard[name], rank, merged[name], file)
        del shard
    return merged


def read_tokenizer(directory: Path) -> Tokenizer:
    return load_tokenizer(directory)


def write(model: Transformer, tokenizer: Tokenizer, directory: Path, *, mp: int = 1) -> None:
    """`consolidated.00.pth` .. `consolidated.{mp-1}.pth` (the tied head written out too, as Meta's reference model
    expects it; `mp` model-parallel shards cut by `SHARD_DIMS`, kv heads repeated on consecutive shards when `mp`
    exceeds them, as Meta's resharding does), `params.json` and `tokenizer.model`; other shards in `directory` are
    removed."""
    config = model.config
    params = config.to_params()
    # Meta's reference `Llama.build(ckpt_dir, max_seq_len, ...)` passes max_seq_len itself next to **params.
    params.pop("max_seq_len")
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    files = [directory / f"consolidated.{rank:02d}.pth" for rank in range(mp)]
    for rank, file in enumerate(files):
        # Pieces are cloned (mp > 1), or torch.save would store the whole tensor each views.
        shard = {name: ShardLayout.of_whole(name, t, mp, config).piece(t, rank) for name, t in state.items()}
        # A file, not a path: torch names the zip's root folder after the path it gets, and the temporary one holds
        # the pid.
        with atomic_open(file, "wb") as f:
            torch.save(shard if mp == 1 else {name: piece.clone() for name, piece in shard.items()}, f)
    for stale in set(directory.glob(SHARD_PATTERN)) - set(files):
        stale.unlink()
    write_json(directory / PARAMS_FILE, params)
    tokenizer.save(directory / TOKENIZER_FILE)


def read_shard(file: Path) -> dict[str, torch.Tensor]:
    """One shard's state dict, memory-mapped (nothing is read until used)."""
    try:
        shard = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))  # what the weights-only unpickler would not import
        if isinstance(e, pickle.UnpicklingError) and refused is not None:
            raise HerdError(
                f"refusing {file}: its pickle holds code or objects other than tensors ({refused.group(1)}), which "
                "herd does not load; re-save its state dict of tensors where it came from, or use a trusted checkpoint"
            ) from None
        raise HerdError(
            f"cannot read {file}: {one_line(e)}; the file is truncated or corrupt, download or save it again"
        ) from None
    if not isinstance(shard, dict):
        raise HerdError(f"{file} holds a {type(shard).__name__}, not a state dict of tensors")
    return shard


def _split(name: str, n_shards: int, config: ModelConfig) -> tuple[int | None, int]:
    """(split dim by `SHARD_DIMS`, consecutive shards holding the same piece) of weight `name` over `n_shards`."""
    parts = name.split(".")
    module = ".".join(parts[2:-1] if parts[0] == "layers" else parts[:-1])
    repeats = 1
    if module in ("attention.wk", "attention.wv") and n_shards > config.kv_heads:
        if n_shards % config.kv_heads:
            raise HerdError(f"{n_shards} model-parallel shards cannot hold {config.kv_heads} kv heads; "
                            "use a shard count that is a multiple or a divisor of it")
        repeats = n_shards // config.kv_heads  # Meta's resharding repeats each kv head on consecutive shards
    return SHARD_DIMS.get(module), repeats


@dataclass(frozen=True)
class ShardLayout:
    """Where each shard's piece of one tensor goes in the merged tensor (by `SHARD_DIMS`)."""

    name: str
    piece_shape: torch.Size
    dim: int | None
    """The split dimension, None for a replicated tensor (taken from the first shard)."""
    repeats: int
    """Consecutive shards holding the same piece (more shards than kv heads)."""
    shape: torch.Size

    @classmethod
    def of(cls, name: str, piece: torch.Tensor, n_shards: int, config: ModelConfig) -> ShardLayout:
        """The layout of `name` read from one of `n_shards` shards' `piece`."""
        dim, repeats = _split(name, n_shards, config)
        if dim == 0 and name == "tok_embeddings.weight" and piece.dim() == 2 and piece.shape[1] != config.dim:
            dim = 1  # Llama 2's ParallelEmbedding
        shape = list(piece.shape)
        if dim is not None:
            shape[dim] *= n_shards // repeats
        return cls(name, piece.shape, dim, repeats, torch.Size(shape))

    @classmethod
    def of_whole(cls, name: str, whole: torch.Tensor, n_shards: int, config: ModelConfig) -> ShardLayout:
        """The layout that cuts the consolidated tensor `whole` into `n_shards` shards (Llama 3's)."""
        dim, repeats = _split(name, n_shards, config)
        shape = list(whole.shape)
        if dim is not None:
            if shape[dim] % (n_shards // repeats):
                raise HerdError(f"cannot cut {name} ({shape[dim]} along dim {dim}) into {n_shards} model-parallel "
                                "shards; pick a shard count that divides it")
            shape[dim] //= n_shards // repeats
        return cls(name, torch.Size(shape), dim, repeats, whole.shape)

    def piece(self, whole: torch.Tensor, rank: int) -> torch.Tensor:
        """Shard `rank`'s piece of the consolidated tensor `whole` (a view)."""
        if self.dim is None:
            return whole
        size = self.piece_shape[self.dim]
        return whole.narrow(self.dim, rank // self.repeats * size, size)

    def copy_piece(self, piece: torch.Tensor, rank: int, merged: torch.Tensor, file: Path) -> None:
        if piece.shape != self.piece_shape:
            raise HerdError(
                f"{file} holds tensor {self.name} with shape {tuple(piece.shape)}, the first shard "
                f"{tuple(self.piece_shape)}; the shards do not fit together"
            )
        if self.dim is None:
            if rank == 0:
                merged.copy_(piece)
        elif rank % self.repeats == 0:
            size = piece.shape[self.dim]
            merged.narrow(self.dim, rank // self.repeats * size, size).copy_(piece)
