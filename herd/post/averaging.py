"""Checkpoint averaging: the element-wise (weighted) mean of models of one architecture, from several runs or
steps (Llama 3 averages the models of each post-training stage's runs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from herd.errors import HerdError


def average_checkpoints(paths: Sequence[str | Path], out_dir: str | Path, weights: Sequence[float] | None = None) -> Path:
    """Average the models at `paths` (anything `herd.load` reads) into a herd-format model at `out_dir`; the
    tokenizer is the first model's. `weights` (normalized to sum 1) default to equal."""
    from herd.checkpoint import load, save

    if len(paths) < 2:
        raise HerdError(f"averaging needs at least two models, got {len(paths)}")
    weights = [1.0] * len(paths) if weights is None else list(weights)
    if len(weights) != len(paths) or any(w <= 0 for w in weights):
        raise HerdError(f"give one positive weight per model ({len(paths)}), got {weights}")
    total = sum(weights)
    model, tok = load(paths[0], dtype=torch.float32)
    averaged = {name: value.detach().clone() * (weights[0] / total) for name, value in model.state_dict().items()}
    for path, weight in zip(paths[1:], weights[1:]):
        other, _ = load(path, dtype=torch.float32)
        if other.config != model.config:
            raise HerdError(f"{path} has another architecture than {paths[0]}; only models of one config average")
        for name, value in other.state_dict().items():
            averaged[name] += value * (weight / total)
    model.load_state_dict(averaged)
    return save(model, tok, out_dir, format="herd")
