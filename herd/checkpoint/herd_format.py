"""herd's own checkpoint format: `config.json` {"format": "herd", "model": params.json fields},
`model.safetensors` under herd's (Meta's) tensor names, and a copy of `tokenizer.model`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from herd.checkpoint import safetensors_io
from herd.checkpoint.files import read_json
from herd.checkpoint.safetensors_io import read_tensors, write_tensors
from herd.checkpoint.state import unique_weights
from herd.errors import HerdError
from herd.model import ModelConfig, Transformer
from herd.run_dir import write_json
from herd.tokenizer import Tokenizer, load_tokenizer

CONFIG_FILE = "config.json"
FORMAT_TAG = "herd"
FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.model"


def is_herd_config(config: dict[str, Any]) -> bool:
    """Whether a config.json dict is herd's (an HF one has no "format" key)."""
    return config.get("format") == FORMAT_TAG


def weight_files(directory: Path) -> list[Path]:
    return safetensors_io.weight_files(directory)


def read_config(directory: Path) -> ModelConfig:
    path = directory / CONFIG_FILE
    config = read_json(path)
    if config.get("version", FORMAT_VERSION) > FORMAT_VERSION:
        raise HerdError(f"{path} is herd format version {config['version']}; upgrade herd to read it")
    if not isinstance(config.get("model"), dict):
        raise HerdError(f"{path} has no 'model' section; restore it or save the model again")
    try:
        return ModelConfig.from_params(config["model"])
    except (TypeError, HerdError) as e:
        raise HerdError(f"{path} has bad model fields: {e}") from None


def read_state(directory: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    return read_tensors(directory)


def read_tokenizer(directory: Path) -> Tokenizer:
    return load_tokenizer(directory)


def write(model: Transformer, tokenizer: Tokenizer, directory: Path) -> None:
    write_tensors(directory, unique_weights(model))
    dtype = str(model.tok_embeddings.weight.dtype).removeprefix("torch.")
    write_json(
        directory / CONFIG_FILE,
        {"format": FORMAT_TAG, "version": FORMAT_VERSION, "model": model.config.to_params(), "dtype": dtype},
    )
    tokenizer.save(directory / TOKENIZER_FILE)
