"""One tensor-parallel rank's slice of a Meta, HF or herd checkpoint, reading only that slice.

Rank r of an N-way run gets what `herd.model.tensor_parallel.shard` cuts from each whole tensor, read as follows:
- Meta `consolidated.0K.pth` shards (memory-mapped by torch.load): when N equals the checkpoint's model-parallel
  size, rank r's file is its state as stored; otherwise only the files overlapping rank r's slice are mapped and
  only the slice is copied out of them.
- safetensors (HF, herd): safetensors' `get_slice` maps the file and the slice alone is copied; HF's wq/wk rows
  are permuted back to Meta's rotary layout per local head (the split keeps whole heads together).
So a rank's peak host memory is about 1/N of the checkpoint plus one tensor. The readers are torch's and
safetensors' own; this module only picks which bytes each rank needs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from herd.checkpoint import hf_format, meta_format, safetensors_io
from herd.checkpoint.state import check_state
from herd.errors import HerdError
from herd.model import ModelConfig
from herd.model.tensor_parallel import check_config, shard_bounds, shard_dim


def read_shard_state(directory: Path, fmt: str, config: ModelConfig, rank: int, world: int) -> dict[str, torch.Tensor]:
    """herd-named tensors of rank `rank` of `world` from the `fmt` ("meta", "hf", "herd") checkpoint in `directory`.

    With tied embeddings a stored head is not read: "output.weight" is the embedding's slice (the same tensor).
    Errors name the rank and the file.
    """
    if not 0 <= rank < world:
        raise HerdError(f"rank {rank} is outside a tensor-parallel group of {world}")
    check_config(config, world)
    try:
        if fmt == "meta":
            state = _read_meta(directory, config, rank, world)
        else:
            state = _read_safetensors(directory, config, rank, world, hf=fmt == "hf")
    except HerdError as e:
        raise HerdError(f"rank {rank} of {world}: {e}") from None
    if config.tie_word_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    return state


def _bounds(name: str, shape: torch.Size, rank: int, world: int) -> tuple[int | None, int, int]:
    """(split dim, start, stop) of rank's slice of tensor `name` (dim None: the whole tensor)."""
    dim = shard_dim(name)
    if dim is None:
        return None, 0, 0
    start, stop = shard_bounds(shape[dim], rank, world, f"dim {dim} of {name}")
    return dim, start, stop


def _read_meta(directory: Path, config: ModelConfig, rank: int, world: int) -> dict[str, torch.Tensor]:
    files = meta_format.weight_files(directory)
    mp = len(files)
    mapped: dict[int, dict[str, torch.Tensor]] = {}

    def shard_file(k: int) -> dict[str, torch.Tensor]:
        if k not in mapped:
            mapped[k] = meta_format.read_shard(files[k])  # memory-mapped: reads nothing until sliced
        return mapped[k]

    own = rank * mp // world  # the first file overlapping this rank's slice: its own when world == mp
    names = [name for name in shard_file(own) if name not in meta_format.NOT_WEIGHTS]
    layouts = {name: meta_format.ShardLayout.of(name, shard_file(own)[name], mp, config) for name in names}
    whole = {name: _meta_like(shard_file(own)[name], layouts[name].shape) for name in names}
    check_state(config, whole, str(directory))
    state = {}
    for name in _wanted(names, config):
        layout = layouts[name]
        dim, start, stop = _bounds(name, layout.shape, rank, world)
        state[name] = _meta_slice(layout, shard_file, own, dim, start, stop, files)
    return state


def _meta_slice(
    layout: meta_format.ShardLayout, shard_file: Callable[[int], dict[str, torch.Tensor]], own: int,
    dim: int | None, start: int, stop: int, files: list[Path],
) -> torch.Tensor:
    """The [start, stop) slice along `dim` of tensor `layout.name`, from the files holding it."""

    def piece(k: int) -> torch.Tensor:
        tensor = shard_file(k).get(layout.name)
        if tensor is None or tensor.shape != layout.piece_shape:
            found = "no such tensor" if tensor is None else f"shape {tuple(tensor.shape)}"
            raise HerdError(f"{files[k]} holds {found} for {layout.name}, expected {tuple(layout.piece_shape)} as in "
                            f"{files[own].name}; the shards do not fit together")
        return tensor

    if layout.dim is None:  # replicated in the files: any one holds it whole
        whole = piece(own)
        return whole if dim is None else whole.narrow(dim, start, stop - start).contiguous()
    size = layout.piece_shape[layout.dim]
    if dim == layout.dim and start // size == (stop - 1) // size:  # inside one stored piece
        unique = start // size
        k = own if own // layout.repeats == unique else unique * layout.repeats
        local = piece(k).narrow(dim, start - unique * size, stop - start)
        return local if local.shape == layout.piece_shape else local.contiguous()
    shape = list(layout.shape)
    if dim is not None:
        shape[dim] = stop - start
    out = torch.empty(shape, dtype=piece(own).dtype)
    for unique in range(layout.shape[layout.dim] // size):
        lo, hi = unique * size, (unique + 1) * size
        if dim == layout.dim:  # the pieces overlapping [start, stop)
            lo, hi = max(lo, start), min(hi, stop)
            if lo >= hi:
                continue
            src = piece(unique * layout.repeats).narrow(dim, lo - unique * size, hi - lo)
            out.narrow(dim, lo - start, hi - lo).copy_(src)
        else:  # split another way in the files (or replicated here): every piece holds part of the slice
            src = piece(unique * layout.repeats)
            out.narrow(layout.dim, lo, hi - lo).copy_(src if dim is None else src.narrow(dim, start, stop - start))
    return out


def _read_safetensors(
    directory: Path, config: ModelConfig, rank: int, world: int, *, hf: bool
) -> dict[str, torch.Tensor]:
    located: dict[str, tuple[Path, str]] = {}
    shapes: dict[str, torch.Tensor] = {}
    for file in safetensors_io.weight_files(directory):
        with safetensors_io.open_weights(file) as handle:
            for stored in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                name = (hf_format.herd_name(stored) or stored) if hf else stored
                if hf and stored.endswith(hf_format.NOT_WEIGHTS_SUFFIX):
                    continue
                if name in located:
                    raise HerdError(f"tensor {stored} is stored twice in {directory} (again in {file.name})")
                meta = handle.get_slice(stored)
                located[name] = (file, stored)
                dtype = meta[0:0].dtype  # an empty slice: the stored dtype as torch names it, no data read
                shapes[name] = torch.empty(meta.get_shape(), dtype=dtype, device="meta")
    check_state(config, shapes, str(directory))
    state = {}
    for name in _wanted(list(located), config):
        file, stored = located[name]
        dim, start, stop = _bounds(name, shapes[name].shape, rank, world)
        with safetensors_io.open_weights(file) as handle:
            if dim is None:
                tensor = handle.get_tensor(stored)
            else:
                index = (slice(None),) * dim + (slice(start, stop),)
                tensor = handle.get_slice(stored)[index].contiguous()
        heads = hf_format.rotary_heads(name, config) if hf else None
        state[name] = tensor if heads is None else hf_format.from_hf_rotary(tensor, heads // world)
    return state


def _wanted(names: list[str], config: ModelConfig) -> list[str]:
    """The names to read: all but a stored head that the embedding's slice stands in for."""
    return [n for n in names if not (config.tie_word_embeddings and n == "output.weight")]


def _meta_like(piece: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A data-less tensor of the whole tensor's shape and the piece's dtype, for `check_state`."""
    return torch.empty(shape, dtype=piece.dtype, device="meta")
