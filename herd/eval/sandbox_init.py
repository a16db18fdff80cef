"""The sandbox's side inside the box: sets the box up where bubblewrap did not, limits itself, runs the program
and, only when the program's code has run to its end, echoes the run's marker back to the harness.

Run by `herd.eval.sandbox` as `python -I -c <this file's source> <JSON settings>`; standard library only, as
it runs before anything else in the box. With `"setup"` set (the `unshare` route) it runs as PID 1 of the new
PID namespace and builds what bubblewrap would: a new root (see `_new_root`), then uid 65534 in a user namespace
of its own (as root) or no capabilities at all (as a normal user in `unshare --map-root-user`), and the program
in a child, so that the program is not the namespace's init. Under bubblewrap this only limits and runs.
"""

import contextlib
import ctypes
import json
import os
import resource
import sys

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 8, 32, 4096, 16384
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_ST_TO_MS = {1: _MS_RDONLY, 2: _MS_NOSUID, 4: _MS_NODEV, 8: _MS_NOEXEC, 1024: _MS_NOATIME, 2048: _MS_NODIRATIME,
             4096: _MS_RELATIME}  # statvfs's ST_* bits -> mount(2)'s MS_* flags (remounts must keep locked ones)
_CLONE_NEWUSER, _MNT_DETACH = 0x10000000, 2
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}  # syscall numbers: glibc has no wrapper
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
_NOBODY = 65534

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(ctypes.get_errno(), f"sandbox setup: {what}: {os.strerror(ctypes.get_errno())}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(libc.mount(source.encode(), target.encode(), fstype and fstype.encode(), flags, data and data.encode()),
           f"mount {target}")


def _new_root(settings: dict) -> None:
    """The view bubblewrap would give: a tmpfs root holding read-only binds of /usr and Python's directories,
    /dev's harmless nodes, a fresh /proc and a size-capped /tmp; the host's root is then pivoted away and
    detached, so nothing else of the host is in the box's mount namespace. (/proc's kernel knobs stay as the
    kernel guards them: root-owned, and the program is neither root outside nor capable inside.)"""
    root = "/tmp"  # a directory to mount the new root on; unshare made the mounts private, the host's is untouched
    nodes = [f"/dev/{node}" for node in ("null", "zero", "full", "random", "urandom")]
    sources = {path: os.open(path, os.O_PATH) for path in [*settings["binds"], *nodes]}  # before /tmp is covered
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    os.makedirs(root + "/tmp")  # first, so that a Python living under /tmp is bound on top of it
    _mount("tmpfs", root + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={settings['disk_bytes']},mode=1777")
    for path, fd in sources.items():
        if path in nodes:
            os.makedirs(root + "/dev", exist_ok=True)
            open(root + path, "w").close()
        else:
            os.makedirs(root + path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", root + path, None, _MS_BIND | _MS_REC)
        kept = sum(ms for st, ms in _ST_TO_MS.items() if os.statvfs(root + path).f_flag & st)
        _mount("none", root + path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | kept)
        os.close(fd)
    for path, target in settings["symlinks"]:
        os.symlink(target, root + path)
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    os.chdir(root)
    _check(libc.syscall(_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", _MNT_DETACH), "detach the host's root")
    os.chdir("/")
    _mount("none", "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _drop_privileges(root: bool) -> None:
    """To uid 65534 in a user namespace of its own (so its process count starts at zero), no user namespaces
    below it, then no capabilities, none to regain by exec, and the parent-death signal (a uid change clears it)."""
    if root:
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)
        _check(libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")  # a uid change hides /proc/self from us
        _check(libc.unshare(_CLONE_NEWUSER), "unshare user namespace")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{_NOBODY} {_NOBODY} 1"), ("gid_map", f"{_NOBODY} {_NOBODY} 1")):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)
    # no user namespaces below the box's: in one, the program could mount a tmpfs of its own past the disk cap
    with open("/proc/sys/user/max_user_namespaces", "w") as file:
        file.write("0")
    for cap in range(int(open("/proc/sys/kernel/cap_last_cap").read()) + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
    _check(libc.capset(header, data), "drop capabilities")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0), "parent-death signal")


def _as_init() -> None:
    """Fork the program off and wait; as PID 1 this process's exit ends every process in the namespace."""
    pid = os.fork()
    if pid:
        while True:
            waited, status = os.wait()
            if waited == pid:
                os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _limit(settings: dict) -> None:
    for name, value in (("CPU", settings["cpu_seconds"]), ("AS", settings["memory_bytes"]),
                        ("FSIZE", settings["file_bytes"]), ("CORE", 0)):
        resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), (value, value))
    # RLIMIT_NPROC counts this user's processes and threads (in a box: of its user namespace): those now + more
    running = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == os.getuid():
                running += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    resource.setrlimit(resource.RLIMIT_NPROC, (running + settings["unseen_processes"] + settings["processes"],) * 2)


def main() -> None:
    settings = json.loads(sys.argv[1])
    if settings["setup"]:
        _new_root(settings)
        _drop_privileges(root=settings["setup"] == "root")
        _as_init()
    os.chdir(settings["workdir"])
    _limit(settings)
    source = sys.stdin.buffer.read()
    os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    marker_fd = settings["marker_fd"]
    exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})  # noqa: S102 - running it is the job
    with contextlib.suppress(OSError, ValueError):  # os._exit below skips the flush at exit; a closed or full
        sys.stdout.flush()  # stdout is the program's business, not a failure of its code
    marker = os.read(marker_fd, 64)  # read only now: while the program ran, the marker was not in this process
    os.write(marker_fd, marker)
    os._exit(0)  # no atexit or thread joins of the program's after the marker


if __name__ == "__main__":
    main()
