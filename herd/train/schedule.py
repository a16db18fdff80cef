"""Learning-rate, batch-size and sequence-length schedules: pure functions of the optimizer step, so resuming needs no
state. LR: linear warmup, cosine decay to a floor (0.1x peak), then an optional linear anneal to 0 (Llama 3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from herd.train.config import Stage


def learning_rate(
    step: int, *, peak: float, total: int, warmup: int = 0, floor_ratio: float = 0.1, anneal: int = 0
) -> float:
    """The LR of optimizer step `step` (0-based) of `total`.

    Steps 0..warmup-1 rise linearly to `peak` (step warmup-1 reaches it); the cosine then falls from
    `peak` to `floor_ratio * peak` at step total - anneal; the last `anneal` steps fall linearly from
    the floor towards 0 (the last one takes floor / anneal, so no step is wasted at LR 0).
    """
    assert 0 <= warmup and 0 <= anneal and warmup + anneal <= total, (warmup, anneal, total)
    floor = floor_ratio * peak
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_end = total - anneal
    if anneal and step >= decay_end:
        return floor * (total - step) / anneal
    progress = min((step - warmup) / max(decay_end - warmup, 1), 1.0)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def grad_accum_at(step: int, base: int, schedule: Mapping[int, int] | None) -> int:
    """Micro-batches per optimizer step at `step`: `base`, or the value of the latest schedule entry <= step.

    A batch-size ramp (Llama 3 doubled its batch twice) is a growing number of micro-batches per step,
    so the data loader's rows and their order stay the same whatever the schedule.
    """
    if not schedule:
        return base
    started = [start for start in schedule if start <= step]
    return schedule[max(started)] if started else base


def stage_at(step: int, stages: Sequence[Stage]) -> Stage:
    """The stage in force at optimizer step `step`: the last one starting at or before it (stages sorted by step)."""
    return next(stage for stage in reversed(stages) if stage.step <= step)
