"""Where a peer's time goes, printed when herd comes out more than 2x ahead of a mature peer (issue 29 item 5): a ratio
that large is believed only beside the peer's profile. torch peers get torch.profiler's top ops by self CPU time,
Python peers cProfile's top functions by their own time (tottime), both from the standard tools."""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Callable

import torch

SUSPICIOUS = 2.0  # herd / peer above this: profile the peer before believing the ratio


def torch_top_ops(fn: Callable[[], object], rows: int = 12) -> str:
    """torch.profiler's table of `fn()`'s top ops by self CPU time."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


def python_top_functions(fn: Callable[[], object], rows: int = 12) -> str:
    """cProfile's table of `fn()`'s top functions by own time (calls into C count to the C function)."""
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(rows)
    table = out.getvalue().split("\n", 4)[-1].strip("\n")  # without pstats' preamble
    return f"{stats.total_tt:.2f} s profiled in all\n{table}"


def explain(ratio: float, peer: str, fn: Callable[[], object], kind: str = "torch", rows: int = 12) -> None:
    """Print the peer's profile of `fn()` when `ratio` (herd / peer, higher = herd faster) exceeds SUSPICIOUS."""
    if ratio <= SUSPICIOUS:
        return
    tool = "torch.profiler, top ops by self CPU time" if kind == "torch" else "cProfile, top functions by own time"
    print(f"\nherd / {peer} = {ratio:.2f}x > {SUSPICIOUS:.0f}x: one more {peer} run, profiled ({tool}):")
    print(torch_top_ops(fn, rows) if kind == "torch" else python_top_functions(fn, rows))
