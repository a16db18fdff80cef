"""The safetensors weights of a checkpoint directory: one `model.safetensors`, or shards listed in an index.

Reads every tensor memory-mapped (nothing is copied until used); writes shards of at most 5 GB atomically.
Both the Hugging Face and the herd format store their weights this way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from herd.checkpoint.files import one_line, read_json
from herd.errors import HerdError
from herd.run_dir import atomic_path, write_json

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SHARD_PATTERN = "model-*-of-*.safetensors"
MAX_SHARD_BYTES = 5 * 1000**3


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of `directory`: the index's shards if it has one, else `model.safetensors`."""
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise HerdError(f"{index} has no 'weight_map'; restore or re-download it")
        files = [directory / name for name in sorted(set(weight_map.values()))]
        for file in files:
            if not file.is_file():
                raise HerdError(f"shard {file.name} listed in {index} is missing; re-download or re-save the model")
        return files
    if (directory / SINGLE_FILE).is_file():
        return [directory / SINGLE_FILE]
    raise HerdError(f"no weights in {directory}: expected {SINGLE_FILE} or {INDEX_FILE} with its shards")


def read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the directory's weight files, by stored name, memory-mapped."""
    tensors: dict[str, torch.Tensor] = {}
    for file in weight_files(directory):
        with open_weights(file) as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                if name in tensors:
                    raise HerdError(f"tensor {name} is stored twice in {directory} (again in {file.name})")
                tensors[name] = handle.get_tensor(name)
    return tensors


@contextmanager
def open_weights(file: Path) -> Iterator[Any]:
    """`safe_open(file)` for the block, a damaged file (truncated, empty, not safetensors) a one-line HerdError."""
    try:
        with safe_open(file, framework="pt") as handle:
            yield handle
    except (SafetensorError, OSError, RuntimeError) as e:
        raise HerdError(
            f"cannot read {file}: {one_line(e)}; the file is truncated or corrupt, download or save it again"
        ) from None


def write_tensors(directory: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write `tensors` as `model.safetensors`, or as shards plus an index when larger than `MAX_SHARD_BYTES`.

    Weight files a previous save left in `directory` that the new ones do not replace are removed.
    """
    shards = _plan_shards(tensors, MAX_SHARD_BYTES)
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for name, shard in zip(names, shards, strict=True):
        with atomic_path(directory / name) as tmp:
            save_file({key: tensors[key].contiguous() for key in shard}, tmp, metadata={"format": "pt"})
    stale = {directory / SINGLE_FILE, directory / INDEX_FILE, *directory.glob(SHARD_PATTERN)}
    if len(shards) > 1:
        weight_map = {key: name for name, shard in zip(names, shards, strict=True) for key in shard}
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        write_json(directory / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
        stale.discard(directory / INDEX_FILE)
    for path in stale - {directory / name for name in names}:
        path.unlink(missing_ok=True)


def _plan_shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[list[str]]:
    """Group tensor names, in order, into shards of at most `max_shard_bytes` (a bigger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards
