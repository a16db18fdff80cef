"""`load` / `save` / `convert` / `info`: the checkpoint entry points, and telling the formats apart.

`load` takes a preset name, a Meta, HF or herd directory, or a Hugging Face Hub id; each format module
(meta_format, hf_format, herd_format) reads and writes one layout and shares the loading path below;
`convert` also exports GGUF (gguf_format), a write-only format for llama.cpp.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch

from herd.checkpoint import herd_format, hf_format, hub, meta_format, safetensors_io, sharded
from herd.checkpoint.files import read_json
from herd.checkpoint.state import model_from_state
from herd.errors import HerdError
from herd.model import PRESETS, ModelConfig, Transformer, build_model, preset
from herd.model.tensor_parallel import TensorParallel, all_ranks_or_none, parallelize
from herd.tokenizer import Tokenizer, default_tokenizer_path

Format = Literal["herd", "hf", "meta"]
FORMATS: dict[str, ModuleType] = {"herd": herd_format, "hf": hf_format, "meta": meta_format}
_EXPECTED_FILES = (
    "params.json + consolidated.*.pth (Meta), config.json + model*.safetensors (Hugging Face) "
    'or config.json with "format": "herd" (herd)'
)


def detect_format(path: str | Path) -> Format:
    """Which checkpoint layout the directory `path` holds: "herd", "hf" or "meta"."""
    directory = _existing_dir(Path(path))
    if (directory / hf_format.CONFIG_FILE).is_file():
        return "herd" if herd_format.is_herd_config(read_json(directory / hf_format.CONFIG_FILE)) else "hf"
    if (directory / meta_format.PARAMS_FILE).is_file():
        return "meta"
    raise HerdError(f"{directory} is not a model directory: expected {_EXPECTED_FILES}")


def load(
    path_or_preset: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    check_finite: bool = True,
    tp: TensorParallel | None = None,
) -> tuple[Transformer, Tokenizer]:
    """Model and tokenizer from a preset name (random weights), a Meta / HF / herd directory or a Hub id.

    Weights keep the checkpoint's dtype unless `dtype` is given. On the CPU they stay memory-mapped from the
    checkpoint files (copy-on-write), so loading reads only what is used and needs no second copy.
    Weights holding a NaN or an infinity are refused (a damaged or diverged model generates garbage without a
    sign); `check_finite=False` loads them anyway. `tp`: this tensor-parallel rank's model, reading only its slice
    of each weight (`load_shard`; a preset is built whole, then cut).
    """
    dtype = _dtype(dtype)
    name = str(path_or_preset)
    if name in PRESETS:
        model = build_model(preset(name), device=device, dtype=dtype or torch.float32)
        model.init_weights(seed=0)
        return model if tp is None else parallelize(model, tp), Tokenizer(default_tokenizer_path())
    if tp is not None:
        with all_ranks_or_none(tp, "loading the model"):  # a rank that cannot load stops the others too
            config, tok, state = load_shard(name, tp.rank, tp.world)
            model = model_from_state(config, state, source=name, device=device, dtype=dtype,
                                     check_finite=check_finite, tp=tp)
        return model, tok
    directory = _resolve(name)
    fmt = FORMATS[detect_format(directory)]
    config = fmt.read_config(directory)
    state = fmt.read_state(directory, config)
    model = model_from_state(
        config, state, source=str(directory), device=device, dtype=dtype, check_finite=check_finite
    )
    return model, fmt.read_tokenizer(directory)


def load_shard(path: str | Path, rank: int, world: int) -> tuple[ModelConfig, Tokenizer, dict[str, torch.Tensor]]:
    """Config, tokenizer and rank `rank`'s slice of every weight (herd.model.tensor_parallel's split over `world`
    ranks) of a Meta / HF / herd directory or a Hub id, reading only that slice (herd.checkpoint.sharded).

    Tensors keep the checkpoint's dtype; a tied head is the embedding's slice (the same tensor)."""
    directory = _resolve(str(path))
    fmt = detect_format(directory)
    config = FORMATS[fmt].read_config(directory)
    state = sharded.read_shard_state(directory, fmt, config, rank, world)
    return config, FORMATS[fmt].read_tokenizer(directory), state


def save(model: Transformer, tokenizer: Tokenizer, out_dir: str | Path, format: Format = "herd") -> Path:
    """Write `model` and `tokenizer` to `out_dir` in herd's, Hugging Face's or Meta's format; returns the dir."""
    if format not in FORMATS:
        raise HerdError(f"unknown checkpoint format {format!r}; choose one of: {', '.join(FORMATS)}")
    directory = Path(out_dir).expanduser()
    if directory.exists() and not directory.is_dir():
        raise HerdError(f"cannot save into {directory}: it is a file; pass a directory")
    directory.mkdir(parents=True, exist_ok=True)
    FORMATS[format].write(model, tokenizer, directory)
    return directory


def convert(
    src: str | Path,
    dst: str | Path,
    to: Format | Literal["gguf"],
    *,
    dtype: torch.dtype | str | None = None,
    outtype: str | None = None,
) -> Path:
    """Re-save the checkpoint `src` (anything `load` takes) in format `to`; returns the new directory.

    `to="gguf"` writes one llama.cpp file at `dst` instead, its matrices typed `outtype` (f32, f16, bf16, q8_0).
    """
    if to not in (*FORMATS, "gguf"):
        raise HerdError(f"unknown checkpoint format {to!r}; choose one of: {', '.join(FORMATS)}, gguf")
    if outtype is not None and to != "gguf":
        raise HerdError(f"outtype {outtype!r} applies to GGUF output only; cast a {to!r} checkpoint's weights "
                        "with dtype (herd convert --dtype float32|bfloat16|float16)")
    model, tokenizer = load(src, dtype=dtype)
    if to == "gguf":
        from herd.checkpoint import gguf_format  # the gguf package loads only for this export

        return gguf_format.write_gguf(model, tokenizer, dst, outtype, name=Path(str(src)).name)
    return save(model, tokenizer, dst, format=to)


def info(path_or_preset: str | Path) -> dict[str, Any]:
    """Format, config (params.json fields), parameter count, weight dtype and size on disk, reading no weights."""
    name = str(path_or_preset)
    if name in PRESETS:
        config = preset(name)
        return _info("preset", config, "float32", [])
    directory = _resolve(name)
    fmt_name = detect_format(directory)
    fmt = FORMATS[fmt_name]
    files = fmt.weight_files(directory)
    return _info(fmt_name, fmt.read_config(directory), _stored_dtype(files[0]), files)


def _info(fmt: str, config: ModelConfig, dtype: str, files: list[Path]) -> dict[str, Any]:
    return {
        "format": fmt,
        "config": config.to_params(),
        "params": config.num_params(),
        "dtype": dtype,
        "weight_files": [str(f) for f in files],
        "size_bytes": sum(f.stat().st_size for f in files),
    }


def _stored_dtype(file: Path) -> str:
    """The dtype of the first tensor in a weight file (memory-mapped, nothing read)."""
    if file.suffix == ".safetensors":
        with safetensors_io.open_weights(file) as handle:
            name = next(iter(handle.keys()), None)
            tensor = None if name is None else handle.get_tensor(name)
    else:
        tensor = next(iter(meta_format.read_shard(file).values()), None)
    if tensor is None:
        raise HerdError(f"{file} holds no tensors; the checkpoint is incomplete, download or save it again")
    return str(tensor.dtype).removeprefix("torch.")


def _resolve(name: str) -> Path:
    """A local directory for `name`: the path itself, or a Hub id's cached snapshot."""
    path = Path(name).expanduser()
    if path.exists() or not hub.is_hub_id(name):
        return _existing_dir(path)
    return hub.download(name)


def _existing_dir(path: Path) -> Path:
    if path.is_dir():
        return path
    if path.is_file():
        raise HerdError(f"{path} is a file; pass the model directory that holds it")
    raise HerdError(
        f"model not found: {path} is not a directory, a Hub id (org/name) or a preset ({', '.join(PRESETS)})"
    )


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise HerdError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return value
