"""Resume checkpoints with torch.distributed.checkpoint (DCP): sharded model and optimizer, plus loop state.

Every rank writes its own shards, and a checkpoint loads on any mesh (saved with dp=2, resumed alone). A save is
atomic (a temp dir renamed into place, then the `latest` pointer replaced); only the last K are kept. An async save
(DCP `async_save`) copies the state to CPU memory, writes it in a background thread, and commits (rename, pointer,
pruning) only once every rank's shards are on disk. The commit lists every file's size in `manifest.json`; loading
checks them and passes over a damaged checkpoint (a truncated shard) to the newest intact one, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from herd.errors import HerdError
from herd.run_dir import fsync, write_json, write_text

LATEST = "latest"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
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
    """Resume checkpoints in `directory`: step_00000100/{DCP shards of model + optimizer, state.pt, config.json}.

    `state.pt` holds rank 0's loop state (data position, RNG, counters); a `latest` pointer names the newest.
    Saving, loading and `wait` are collective: every rank calls them. With `async_save`, `save` returns once the state
    is staged; the checkpoint becomes `latest` when its background write has finished (`wait` blocks until then).
    """

    def __init__(self, directory: str | Path, keep_last: int = 2, *, is_main: bool = True, async_save: bool = False) -> None:
        assert keep_last >= 1, keep_last
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.is_main = is_main
        self.async_save = async_save
        self._pending: Future | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="herd-checkpoint") if async_save else None
        self._async_group: dist.ProcessGroup | None = None

    def latest(self) -> Path | None:
        """The newest intact checkpoint, or None when there is none: the one `latest` names, else (it is damaged)
        the newest intact one before it, with a warning naming the damaged ones; a one-line error if none is intact."""
        pointer = self.directory / LATEST
        if not pointer.is_file():
            return None
        named = self.directory / pointer.read_text().strip()
        steps = (p for p in self.directory.iterdir() if STEP_DIR.match(p.name) and p.name < named.name)
        older = sorted(steps, reverse=True)
        damaged = []
        for path in [named, *older]:
            problem = damage(path)
            if problem is None:
                if damaged and self.is_main:
                    warnings.warn(f"damaged checkpoint {'; '.join(damaged)}: resuming from {path}", stacklevel=1)
                return path
            damaged.append(f"{path} ({problem})")
        raise HerdError(
            f"no intact checkpoint in {self.directory}: {'; '.join(damaged)}; restore the files, or delete "
            f"{self.directory} to start over"
        )

    def save(
        self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], config: dict[str, Any]
    ) -> Path:
        """Write checkpoint `step` (state: rank 0's tensors and plain values; config: JSON) and point `latest` at it
        (an async save: once written, in the background; a save first waits for the one before)."""
        self.wait()
        final = self.directory / f"step_{step:08d}"
        tmp = self.directory / f".tmp-{final.name}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            torch.save(state, tmp / STATE_FILE)
            write_json(tmp / CONFIG_FILE, config, indent=1, default=str)
        _barrier()
        model_state, optim_state = get_state_dict(model, optimizer)
        shards = {"model": model_state, "optimizer": optim_state}
        with _quiet_when_alone():
            if not self.async_save:
                dcp.save(shards, checkpoint_id=tmp, no_dist=not _distributed())
                if self.is_main:
                    self._commit(tmp, final)
                _barrier()
                return final
            written = dcp.async_save(
                shards, checkpoint_id=tmp, no_dist=not _distributed(), process_group=self._background_group()
            )
        # DCP's coordinator (rank 0) finishes a save only after gathering every rank's write results, so rank 0's
        # future resolving means all shards are on disk: rank 0 commits right then, in its writer thread
        self._pending = self._writer.submit(self._finish_async, written, tmp, final)
        return final

    def wait(self) -> None:
        """Block until the pending async save (if any) is written and committed on every rank; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()
            _barrier()

    def _finish_async(self, written: Future, tmp: Path, final: Path) -> None:
        written.result()
        if self.is_main:
            self._commit(tmp, final)

    def _background_group(self) -> dist.ProcessGroup | None:
        """A gloo group of its own for the background thread's collectives (they must not interleave with training's)."""
        if _distributed() and self._async_group is None:
            self._async_group = dist.new_group(backend="gloo")
        return self._async_group

    def _commit(self, tmp: Path, final: Path) -> None:
        """Rank 0: list its files' sizes in the manifest, make the written `tmp` checkpoint durable, rename it to
        `final`, point `latest` at it, prune."""
        sizes = {file.name: file.stat().st_size for file in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST_FILE, {"sizes": sizes}, indent=1)
        for file in tmp.iterdir():
            fsync(file)
        if final.exists():  # the same step saved again (after a rollback): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        write_text(self.directory / LATEST, final.name)
        self._prune(keep=final)

    def load_into(self, model: nn.Module, optimizer: torch.optim.Optimizer, path: Path | None = None) -> dict[str, Any] | None:
        """Load checkpoint `path` (default: the latest) into this rank's shards of model and optimizer; returns the
        loop state saved with it, or None when there is no checkpoint."""
        self.wait()
        path = path or self.latest()
        if path is None:
            return None
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        with _quiet_when_alone():
            dcp.load(state, checkpoint_id=path, no_dist=not _distributed())
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)

    def load_model(self, model: nn.Module, path: Path | None = None) -> None:
        """Read the whole model of checkpoint `path` (default: the latest) into a plain, unsharded `model`, in this
        process alone (e.g. rank 0 exporting the final model)."""
        path = path or self.latest()
        with _quiet_when_alone(force=True):
            dcp.load({"model": model.state_dict()}, checkpoint_id=path, no_dist=True)

    def load(self, path: Path | None = None) -> dict[str, Any] | None:
        """Everything checkpoint `path` (default: the latest) holds, as whole tensors in one dict (model, optimizer,
        data, rng, loop), or None when there is none; reads the shards of all ranks in this process."""
        path = path or self.latest()
        if path is None:
            return None
        with tempfile.TemporaryDirectory() as tmp, _quiet_when_alone(force=True):
            dcp_to_torch_save(path, Path(tmp) / "whole.pt")
            state = torch.load(Path(tmp) / "whole.pt", map_location="cpu", weights_only=True)
        return {**state, **torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)}

    def _prune(self, keep: Path) -> None:
        """Delete leftovers of interrupted saves and all but the newest `keep_last` checkpoints up to `keep` (later
        ones, left by a resume that passed over them as damaged, are replaced when the run saves their step again)."""
        for stale in self.directory.glob(".tmp-step_*"):
            shutil.rmtree(stale, ignore_errors=True)
        steps = sorted(p for p in self.directory.iterdir() if STEP_DIR.match(p.name) and p.name <= keep.name)
        for old in steps[: max(len(steps) - self.keep_last, 0)]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)


def damage(path: Path) -> str | None:
    """What is wrong with checkpoint `path` (a missing file, a size other than its manifest's), None if intact.

    Checkpoints saved before manifests existed are checked for their state file alone.
    """
    if not (path / STATE_FILE).is_file():
        return "missing" if not path.exists() else f"no {STATE_FILE}"
    if not (path / MANIFEST_FILE).is_file():
        return None
    try:
        sizes = json.loads((path / MANIFEST_FILE).read_text())["sizes"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"unreadable {MANIFEST_FILE}"
    for name, size in sizes.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size:,} bytes, {size:,} when saved"
    return None


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _quiet_when_alone(force: bool = False) -> Iterator[None]:
    """Silence DCP's warning that it runs in a single process, which is what a lone run (or `force`) means."""
    with warnings.catch_warnings():
        if force or not _distributed():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _barrier() -> None:
    if _distributed():
        dist.barrier()

