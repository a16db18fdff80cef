"""`herd serve` picks OpenMP's wait policy from the load before torch starts libgomp: threads sleep at barriers on
an oversubscribed machine, spin (libgomp's default) otherwise, and a policy the user set stays."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from herd.cli.openmp import machine_load, pick_wait_policy


def test_busy_machine_sleeps_quiet_one_spins_and_the_user_decides():
    busy: dict[str, str] = {}
    assert "OMP_WAIT_POLICY=PASSIVE" in pick_wait_policy(busy, load=15.2, cpus=2)
    assert busy == {"OMP_WAIT_POLICY": "PASSIVE"}
    quiet: dict[str, str] = {}
    assert "spin" in pick_wait_policy(quiet, load=1.3, cpus=2) and quiet == {}
    after_a_job: dict[str, str] = {}  # the average trails: 2 cores just freed by a 2-thread job
    assert "spin" in pick_wait_policy(after_a_job, load=2.6, cpus=2) and after_a_job == {}
    for own in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}):
        kept = dict(own)
        assert "as the environment says" in pick_wait_policy(kept, load=15.2, cpus=2) and kept == own


@pytest.mark.parametrize(("load", "spincount"), [(99.0, "0"), (0.0, "300000")])
def test_libgomp_starts_with_the_chosen_policy(tmp_path, load, spincount):
    """libgomp prints the spin count it started with (OMP_DISPLAY_ENV): 0 once herd serve chose PASSIVE."""
    script = (f"import os; os.getloadavg = lambda: ({load}, {load}, {load})\n"
              f"from herd.cli import main; main(['serve', '--model', {str(tmp_path / 'missing')!r}])")
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run([sys.executable, "-c", script], env={**env, "OMP_DISPLAY_ENV": "VERBOSE"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "model not found" in done.stderr  # torch loaded, then the model was missing
    assert f"GOMP_SPINCOUNT = '{spincount}'" in done.stderr


def test_the_line_comes_with_the_ready_server(monkeypatch, capsys):
    """Printed beside the decode path once the engine is ready (in this process torch was loaded first)."""
    from herd.cli import main
    from herd.serve import server

    monkeypatch.setattr(server, "_serve_http", lambda *args: None)  # stop once the engine is ready
    main(["serve", "--model", "tiny", "--port", "0", "--device", "cpu"])
    lines = capsys.readouterr().err.splitlines()
    assert lines[-2].startswith("herd serve: one request's decode step")
    assert lines[-1].startswith("herd serve: OpenMP threads wait at barriers as libgomp started (torch was loaded")


def test_a_system_without_a_load_average_or_cpu_affinity_counts_as_idle(monkeypatch):
    """macOS has no sched_getaffinity, Windows no getloadavg, and getloadavg may raise OSError: herd serve still
    starts, taking the machine as idle (libgomp's spin)."""
    def no_load() -> tuple[float, float, float]:
        raise OSError("load average unobtainable")

    monkeypatch.setattr(os, "getloadavg", no_load)
    monkeypatch.delattr(os, "sched_getaffinity")
    assert machine_load() == (0.0, os.cpu_count())
    monkeypatch.delattr(os, "getloadavg")
    assert machine_load() == (0.0, os.cpu_count())
