"""Running untrusted generated code (HumanEval, synth_code): each program in an OS-level box, scored by a marker
that only the end of its code can produce.

What holds the program in, and by what:
- bubblewrap (`bwrap`, Debian's `bubblewrap` package), preferred: fresh user, mount, PID, network, IPC and UTS
  namespaces, and no user namespaces below (in one a program could mount a tmpfs past the cap); uid/gid 65534 (as root, bwrap itself is started as 65534, so the uid is unprivileged outside the
  box too); a read-only root holding only /usr (with /bin, /lib...) and this Python's own directories, a /proc
  of its own, a read-only minimal /dev and a private /tmp capped at `disk_bytes`; `--die-with-parent`,
  `--new-session`. No /home, /run, /etc or host /tmp: no host files to write, no host Unix sockets to reach.
- `unshare` (util-linux) where bwrap is absent or fails: the same namespaces (as a normal user through
  `--map-root-user`) and the same view, built by `sandbox_init` (new root, pivot_root, host root detached),
  then uid 65534 in a user namespace of its own (as root) or no capabilities (as a normal user), and no user
  namespaces below.
- Both: rlimits set inside the box (CPU seconds, address space per process, file size, processes and threads,
  no core dumps); at the wall-clock timeout bwrap / unshare is killed, which kills the namespace's init and so
  every process in the namespace, detached ones included; an environment holding nothing of the parent's.
  No Python-level guard: the box makes one pointless, and a program can always go around one.
- Neither works: `run_program` refuses with a HerdError naming bubblewrap, unless HERD_SANDBOX=none opts into
  running the program unboxed with the rlimits only (then it can do whatever its user can).

Passed means the program's code ran to its end: the box echoes back a random marker that it reads only then
(see `sandbox_init.main`), so `os._exit(0)`, `sys.exit(0)` or a kill cannot pass. A program that knows this
harness can still read the marker's descriptor itself: the marker stops exits, not an attacker of the harness.

HERD_SANDBOX=auto (default: bwrap, else unshare) | bwrap | unshare | none picks the route.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from herd.errors import HerdError

log = logging.getLogger(__name__)
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: `_expose` runs between fork and exec

Status = Literal["passed", "failed", "timeout"]
ROUTES = ("bwrap", "unshare", "none")
_NOBODY = 65534
_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
_INIT = (Path(__file__).parent / "sandbox_init.py").read_text(encoding="utf-8")
_CLONE_NEWNS, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x20000, 4096, 16384, 1 << 18


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 2 << 30
    """Address space of each process; Python itself needs ~100 MB."""
    file_bytes: int = 16 << 20
    """Largest file the program may write."""
    processes: int = 4
    """Processes and threads the program may add to itself (RLIMIT_NPROC)."""
    disk_bytes: int = 64 << 20
    """All the files the program may keep in its /tmp (the tmpfs's size)."""


@dataclass(frozen=True)
class SandboxResult:
    status: Status
    """"passed": the program's code ran to its end (the marker came back); "timeout": wall-clock or CPU time ran
    out; "failed": anything else (an error, an exit, a memory or file-size limit, a refused action)."""
    returncode: int | None
    stderr: str
    """The end of what the program wrote to stderr (the traceback of a failure)."""
    stdout: str = ""
    """The end of what the program printed (the code interpreter's result)."""


def run_program(program: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `program` (Python source) in the box HERD_SANDBOX picks; it passes when its code runs to its end."""
    return _run(_route(), program, limits)


def _route() -> str:
    wanted = os.environ.get("HERD_SANDBOX", "auto")
    if wanted not in ("auto", *ROUTES):
        raise HerdError(f"HERD_SANDBOX={wanted!r}: use auto, bwrap, unshare or none")
    if wanted == "none":
        _warn_unboxed()
        return wanted
    tried = ("bwrap", "unshare") if wanted == "auto" else (wanted,)
    for route in tried:
        if _failure(route) is None:
            return route
    raise HerdError(
        f"no sandbox for untrusted code works here ({'; '.join(f'{r}: {_failure(r)}' for r in tried)}): "
        "install bubblewrap (apt-get install bubblewrap) and allow user namespaces, "
        "or set HERD_SANDBOX=none to run generated code unboxed at your own risk"
    )


@functools.cache
def _warn_unboxed() -> None:
    log.warning("HERD_SANDBOX=none: generated code runs without a box, with rlimits only")


@functools.cache
def _failure(route: str) -> str | None:
    """Why `route` cannot run a program here (its last line of errors), or None when it can."""
    if shutil.which(route) is None:
        return "not installed"
    result = _run(route, "pass\n", SandboxLimits())
    return None if result.status == "passed" else (result.stderr.strip().splitlines() or [result.status])[-1][:200]


def _run(route: str, program: str, limits: SandboxLimits) -> SandboxResult:
    marker = secrets.token_hex(16).encode()
    ours, theirs = socket.socketpair()
    with ours, theirs, tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as stderr, \
            tempfile.TemporaryFile() as stdout, tempfile.TemporaryDirectory(prefix="herd-sandbox-") as workdir:
        source.write(program.encode())
        source.seek(0)
        ours.sendall(marker)
        ours.shutdown(socket.SHUT_WR)
        settings = {**asdict(limits), "marker_fd": theirs.fileno(), "setup": None, "workdir": "/tmp",
                    "unseen_processes": 0}
        command, preexec = _command(route, settings, workdir)
        process = subprocess.Popen(
            command, stdin=source, stdout=stdout, stderr=stderr, env=_ENV, pass_fds=(theirs.fileno(),),
            start_new_session=True, preexec_fn=preexec,
        )
        theirs.close()
        try:
            process.wait(timeout=limits.wall_seconds)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill(process)
        ours.setblocking(False)
        try:
            echoed = ours.recv(len(marker) + 1)
        except OSError:  # nothing came back (BlockingIOError), or the marker was never read (ConnectionResetError)
            echoed = b""
        err, out = _tail(stderr), _tail(stdout)
    code = process.returncode
    cpu_out = code in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL)
    status: Status = "passed" if echoed == marker else "timeout" if timed_out or cpu_out else "failed"
    return SandboxResult(status, None if timed_out else code, err, out)


def _tail(file) -> str:
    """The last 2000 characters written to `file`."""
    file.seek(max(0, os.fstat(file.fileno()).st_size - 4000))
    return file.read().decode(errors="replace")[-2000:]


def _command(route: str, settings: dict, workdir: str) -> tuple[list[str], object]:
    """The command line that runs `sandbox_init` in `route`'s box, and what the child runs before exec."""
    root = os.getuid() == 0
    if route == "none":
        settings["workdir"] = workdir
        return [sys.executable, "-I", "-c", _INIT, json.dumps(settings)], None
    if route == "unshare":
        system = _system_dirs()
        settings |= {"setup": "root" if root else "user", "binds": [p for p in system if not os.path.islink(p)]
                     + list(_python_dirs()), "symlinks": [(p, os.readlink(p)) for p in system if os.path.islink(p)]}
        user = [] if root else ["--user", "--map-root-user"]
        settings["unseen_processes"] = 0 if root else 1  # unshare itself: in the box's user namespace, not its PIDs
        return ["unshare", *user, "--pid", "--net", "--ipc", "--uts", "--mount", "--fork", "--kill-child",
                sys.executable, "-I", "-c", _INIT, json.dumps(settings)], None
    command = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
               "--uid", str(_NOBODY), "--gid", str(_NOBODY), "--hostname", "sandbox", "--clearenv"]
    for name, value in _ENV.items():
        command += ["--setenv", name, value]
    # /tmp first, so that a Python living under /tmp is bound on top of it
    command += ["--perms", "1777", "--size", str(settings["disk_bytes"]), "--tmpfs", "/tmp"]
    for path in _system_dirs():
        command += ["--symlink", os.readlink(path), path] if os.path.islink(path) else ["--ro-bind", path, path]
    for path in _python_dirs():
        command += ["--ro-bind", path, path]
    command += ["--dev", "/dev", "--remount-ro", "/dev", "--proc", "/proc", "--remount-ro", "/", "--chdir", "/tmp",
                "--", sys.executable, "-I", "-c", _INIT, json.dumps(settings)]
    return command, functools.partial(_expose, _blocked(_python_dirs()), uid=_NOBODY) if root else None


def _system_dirs() -> list[str]:
    return [p for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32") if os.path.lexists(p)]


@functools.cache
def _python_dirs() -> tuple[str, ...]:
    """What this interpreter needs besides /usr: its prefixes (the venv's and the base one) and its binary's dir."""
    paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    paths |= {os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))}
    paths = {p for p in paths if not p.startswith("/usr/") and p != "/usr"}
    return tuple(sorted(p for p in paths if not any(p.startswith(q + "/") for q in paths)))


def _blocked(paths: tuple[str, ...]) -> dict[str, list[str]]:
    """For the paths uid 65534 cannot reach (a venv under /root), the first directory on the way it cannot enter."""
    out: dict[str, list[str]] = {}
    for path in paths:
        parts = Path(path).parts
        for depth in range(2, len(parts) + 1):
            ancestor = os.path.join(*parts[:depth])
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                out.setdefault(ancestor, []).append(path)
                break
    return out


def _expose(blocked: dict[str, list[str]], uid: int | None = None) -> None:
    """In the child, as root, before exec: a private mount namespace where an empty tmpfs covers each blocked
    directory and holds bind mounts of just the paths Python needs, so that other uids reach them; then, for
    bwrap, the drop to `uid` (65534: bwrap, unprivileged, maps the box's uid onto it)."""
    if blocked:
        if _LIBC.unshare(_CLONE_NEWNS) or _LIBC.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None):
            raise OSError(ctypes.get_errno(), "sandbox: private mount namespace")
        for ancestor, paths in blocked.items():
            fds = [os.open(p, os.O_PATH) for p in paths]
            if _LIBC.mount(b"tmpfs", ancestor.encode(), b"tmpfs", 0, b"mode=0755,size=64k"):
                raise OSError(ctypes.get_errno(), f"sandbox: tmpfs on {ancestor}")
            for path, fd in zip(paths, fds):
                os.makedirs(path, exist_ok=True)
                if _LIBC.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, _MS_BIND | _MS_REC, None):
                    raise OSError(ctypes.get_errno(), f"sandbox: bind {path}")
                os.close(fd)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL to the box's group: bwrap / unshare dies, its child (the PID namespace's init) gets SIGKILL from
    --die-with-parent / --kill-child, and the kernel kills everything else in the namespace."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
