"""OpenMP's wait policy for `herd serve`, picked from the machine's load before torch starts libgomp.

libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, as torch loads it, so the CLI picks before anything imports
torch. By default a thread that reaches a barrier first spins (some 300,000 polls) before it sleeps. With the
engine's one OpenMP team (herd.serve.async_engine) on an idle machine that keeps each decode step fast; where more
threads are runnable than there are cores, a spinning thread holds a core its team mate needs to reach the
barrier. Measured with benchmarks/serve_teams.py (random llama3-125m, c=1, compiled step, 2 cores, other work
holding the 1-minute load average at 14-15): TPOT 212 ms spinning, 16 ms with OMP_WAIT_POLICY=PASSIVE, 34 ms with
GOMP_SPINCOUNT=1000, 51 ms on one thread (OMP_NUM_THREADS=1); at load 15-18, 471 ms spinning, 26 ms passive. On an
idle machine spinning wins (engine step 8.3 against 14.8 ms a token sleeping, benchmarks/decode_profile.py). So
when the load average is over the CPUs this process may run on (OVERSUBSCRIBED times them), and the user has set
neither variable, `herd serve` makes the threads sleep at once (OMP_WAIT_POLICY=PASSIVE). The choice holds for
the server's life; its start-up line says which it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

OVERSUBSCRIBED = 1.5
"""A load average over this many times the CPUs makes OpenMP's threads sleep: not 1, as the 1-minute average trails,
and 2 cores just freed by a 2-thread job (a benchmark run before the server, say) still average about 2."""


def pick_wait_policy(environ: MutableMapping[str, str], load: float, cpus: int) -> str:
    """Set OMP_WAIT_POLICY=PASSIVE in `environ` when `load` (the 1-minute load average) is over
    OVERSUBSCRIBED x `cpus` and `environ` sets no policy of its own; the start-up line saying which policy serves."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        chosen = " ".join(f"{key}={environ[key]}" for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if key in environ)
        return f"herd serve: OpenMP threads wait at barriers as the environment says ({chosen})"
    if load > OVERSUBSCRIBED * cpus:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return (f"herd serve: OpenMP threads sleep at barriers (OMP_WAIT_POLICY=PASSIVE): the 1-minute load average "
                f"{load:.1f} is over {OVERSUBSCRIBED}x this process's {cpus} CPUs, where spinning threads slow "
                "decoding (OMP_WAIT_POLICY=ACTIVE spins)")
    return (f"herd serve: OpenMP threads spin at barriers (libgomp's default): the 1-minute load average {load:.1f} "
            f"is within {OVERSUBSCRIBED}x this process's {cpus} CPUs (OMP_WAIT_POLICY=PASSIVE sleeps: faster where "
            "the cores are busy)")


def choose_wait_policy() -> str:
    """`pick_wait_policy` for this process and machine, before torch loads libgomp (after, the line says so)."""
    if "torch" in sys.modules:
        return "herd serve: OpenMP threads wait at barriers as libgomp started (torch was loaded before herd serve)"
    return pick_wait_policy(os.environ, *machine_load())


def machine_load() -> tuple[float, int]:
    """The 1-minute load average (0.0, taken as idle, where the system reports none) and the CPUs this process may
    run on (all of them where the system cannot say, as on macOS)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no getloadavg; a system may report none
        load = 0.0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return load, cpus
