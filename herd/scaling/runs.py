"""Training a sweep's runs: each through the normal pretraining stage (so each resumes from its checkpoints and a
finished one is skipped), then scored on the downstream tasks; `workers` runs at once in separate processes.

Every finished run leaves runs/<name>/scaling.json (its plan, final validation loss and downstream scores); the
sweep's table, results.jsonl, is rebuilt from those, so an interrupted sweep loses at most its unfinished runs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from herd.run_dir import write_json
from herd.scaling.config import ScalingConfig
from herd.scaling.plan import PlannedRun

RESULT = "scaling.json"
_SLOT: int = 0


def run_sweep_runs(config: ScalingConfig, runs: Sequence[PlannedRun], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train and score every run not finished yet; returns every run's record, in plan order."""
    todo = [run for run in runs if _cached(config, run) is None]
    if todo:
        log(f"[scaling] {len(runs) - len(todo)} of {len(runs)} runs done already; training {len(todo)} "
            f"({sum(r.flops for r in todo):.2e} FLOPs) on {config.workers} worker(s)")
    if config.workers == 1:
        for i, run in enumerate(todo, 1):
            _report(log, i, len(todo), train_and_score(config, run))
    else:
        slots: Any = multiprocessing.get_context("spawn").Queue()
        for slot in range(config.workers):
            slots.put(slot)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(config.workers, mp_context=context, initializer=_take_slot,
                                 initargs=(slots,)) as pool:
            futures = [pool.submit(train_and_score, config, run) for run in todo]
            try:
                for i, future in enumerate(as_completed(futures), 1):
                    _report(log, i, len(todo), future.result())
            except BaseException:  # a failed run stops the sweep now, not after every queued run has trained
                pool.shutdown(cancel_futures=True)
                raise
    return [_cached(config, run) for run in runs]  # type: ignore[misc]


def train_and_score(config: ScalingConfig, run: PlannedRun) -> dict[str, Any]:
    """Pretrain `run` (resuming its checkpoints) and score its final model; writes and returns its record.

    Every run, in a worker or not, uses the same CPU threads (cores // workers): timings and results then do not
    depend on how the run was launched, and threads never oversubscribe the cores.
    """
    import torch

    torch.set_num_threads(_threads(config))
    from herd.checkpoint import load
    from herd.train.pretrain import pretrain
    from herd.scaling.downstream import downstream_task, score_task

    train = config.pretrain_config(run.name, steps=run.steps, fields=_fields(config, run.model),
                                   weights=config.mixes[run.mix] if run.mix else None)
    if train.device.startswith("cuda") and config.workers > 1 and ":" not in train.device:
        train.device = f"cuda:{_SLOT}"
    result = pretrain(train)
    scores = {}
    if config.downstream.tasks:
        model, tok = load(result.model_dir, device=train.device if train.device != "auto" else None)
        model.eval()
        with torch.inference_mode():
            for name in config.downstream.tasks:
                scores[name] = score_task(model, tok, downstream_task(name), Path(config.downstream.data_dir),
                                          limit=config.downstream.limit, batch_size=config.downstream.batch_size)
    record = {**run.as_dict(), "val_loss": result.final_val_loss, "val_bpb": result.final_val_bpb,
              "train_loss": result.final_loss, "train_seconds": _train_seconds(result.run_dir), "downstream": scores}
    write_json(result.run_dir / RESULT, record, indent=1)
    return record


def _fields(config: ScalingConfig, model: str) -> dict[str, Any]:
    return {**config.models, **config.target_models}[model]


def _cached(config: ScalingConfig, run: PlannedRun) -> dict[str, Any] | None:
    path = config.run_dir / "runs" / run.name / RESULT
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    same_run = {k: record[k] for k in run.as_dict()} == run.as_dict()
    return record if same_run and sorted(record["downstream"]) == sorted(config.downstream.tasks) else None


def _train_seconds(run_dir: Path) -> float | None:
    manifest = run_dir / "manifest.json"
    return json.loads(manifest.read_text()).get("train_seconds") if manifest.is_file() else None


def _threads(config: ScalingConfig) -> int:
    return max((os.cpu_count() or 1) // config.workers, 1)


def _take_slot(slots: Any) -> None:
    """Worker start: claim a device slot (cuda:<slot> for GPU runs)."""
    global _SLOT
    _SLOT = slots.get()


def _report(log: Callable[[str], None], i: int, total: int, record: dict[str, Any]) -> None:
    scores = " ".join(f"{task} nll {s['nll']:.3f} acc {s['acc']:.3f}" for task, s in record["downstream"].items())
    log(f"[scaling] {i}/{total} {record['name']}: N={record['compute_params']:.3g} D={record['tokens']:.3g} "
        f"val_loss {record['val_loss']:.4f} {scores}")


__all__ = ["RESULT", "run_sweep_runs", "train_and_score"]
