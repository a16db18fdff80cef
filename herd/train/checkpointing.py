"""Single-process resume checkpoints: model, optimizer, data-loader position, RNG and loop counters.

A save is atomic (a temp dir renamed into place, then the `latest` pointer replaced), so a run killed at any
moment resumes from a complete checkpoint; only the last K are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from herd.errors import HerdError

LATEST = "latest"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
STEP_DIR = re.compile(r"^step_(\d{8})$")


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from (torch CPU and CUDA, numpy, Python)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Resume checkpoints in `directory`: step_00000100/{state.pt, config.json} and a `latest` pointer."""

    def __init__(self, directory: str | Path, keep_last: int = 2) -> None:
        assert keep_last >= 1, keep_last
        self.directory = Path(directory)
        self.keep_last = keep_last

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        pointer = self.directory / LATEST
        if not pointer.is_file():
            return None
        path = self.directory / pointer.read_text().strip()
        if not (path / STATE_FILE).is_file():
            raise HerdError(f"{pointer} names {path.name}, which is missing; delete {pointer} to start over")
        return path

    def save(self, step: int, state: dict[str, Any], config: dict[str, Any]) -> Path:
        """Write checkpoint `step` (state: tensors and plain values; config: JSON) and point `latest` at it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step_{step:08d}"
        tmp = self.directory / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(state, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1, default=str))
        for file in tmp.iterdir():
            _fsync(file)
        if final.exists():  # the same step saved again (after a rollback): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        pointer_tmp = self.directory / f".{LATEST}.tmp"
        pointer_tmp.write_text(final.name)
        _fsync(pointer_tmp)
        os.replace(pointer_tmp, self.directory / LATEST)
        _fsync(self.directory)
        self._prune(keep=final)
        return final

    def load(self, path: Path | None = None) -> dict[str, Any] | None:
        """The state saved at `path` (default: the latest checkpoint), or None when there is none."""
        path = path or self.latest()
        if path is None:
            return None
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)

    def _prune(self, keep: Path) -> None:
        """Delete leftovers of interrupted saves and all but the newest `keep_last` checkpoints."""
        for stale in self.directory.glob(".tmp-step_*"):
            shutil.rmtree(stale, ignore_errors=True)
        steps = sorted(p for p in self.directory.iterdir() if STEP_DIR.match(p.name))
        for old in steps[: max(len(steps) - self.keep_last, 0)]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
