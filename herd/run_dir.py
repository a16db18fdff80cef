"""Run directories: files that appear whole or not at all, and the manifest that says a stage finished.

Every file goes to a temporary name beside its target, is synced and then renamed over it, so a crash mid-write
leaves the old file (or none) and no litter, never a truncated one a rerun would trust (and a reader that
memory-mapped the old file keeps it). A stage writes its manifest last; `read_manifest` reads it back to decide
skip (same config) or redo. Standard library only.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class AtomicFile:
    """A temporary path `tmp` beside `path` to write: `commit()` syncs it and moves it over `path`, `discard()`
    removes it (for writers whose file outlives one `with` block; `atomic_path` is the block form)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def commit(self) -> Path:
        fsync(self.tmp)
        os.replace(self.tmp, self.path)
        fsync(self.path.parent)
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; once the block succeeds it replaces `path`, else it is removed."""
    file = AtomicFile(path)
    try:
        yield file.tmp
        file.commit()
    finally:
        file.discard()


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """`open(path, mode)` for streaming a whole file (JSONL, ...): it appears under `path` only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as file:
        yield file


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data`, atomically."""
    with atomic_open(path, "wb") as file:
        file.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with UTF-8 `text`, atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, *, indent: int = 2, default: Callable[[Any], Any] | None = None) -> None:
    """Replace `path` with `obj` as JSON (and a final newline), atomically; `default` as in `json.dumps`."""
    write_text(path, json.dumps(obj, indent=indent, default=default) + "\n")


def write_manifest(path: str | Path, manifest: dict[str, Any], *, default: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Mark a stage finished: write `manifest` with "complete": true to `path`, atomically; returns what was written.

    Call it last, after every other output of the stage is in place, with the stage's config identity in it."""
    done = {**manifest, "complete": True}
    write_json(path, done, indent=1, default=default)
    return done


def read_manifest(path: str | Path, identity: Any, *, key: str = "config") -> dict[str, Any] | None:
    """The manifest at `path` if its stage finished with `identity` (stored under `key`), else None: run the stage.

    A missing manifest, or one of another config (the user changed it: the stage runs again), is silently not
    finished; an unreadable or unfinished one says so in a warning."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        warnings.warn(f"{path} is unreadable ({type(e).__name__}); running the stage again", stacklevel=2)
        return None
    if not isinstance(done, dict) or done.get("complete") is not True:
        warnings.warn(f"{path} is not a finished stage's manifest; running the stage again", stacklevel=2)
        return None
    return done if done.get(key) == identity else None


UNSYNCABLE = (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES)
"""What a filesystem that cannot sync a directory says (CIFS, some FUSE and container mounts; no read access)."""


def fsync(path: str | Path) -> None:
    """Flush a file's or directory's data to disk (a rename is durable once its directory is synced). A directory
    its filesystem cannot sync is skipped: the rename is still atomic, only its durability rests with the OS."""
    directory = Path(path).is_dir()
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        if not (directory and error.errno in UNSYNCABLE):
            raise
