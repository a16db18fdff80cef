"""File helpers the checkpoint formats share: atomic replacement, JSON files, one-line error text.

Files are replaced, never overwritten, so a model memory-mapped from the old file keeps working.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from herd.errors import HerdError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, with a one-line HerdError if it is missing or not valid JSON."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise HerdError(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HerdError(f"{path} is not valid JSON ({one_line(e)}); restore or re-download it") from None
    if not isinstance(obj, dict):
        raise HerdError(f"{path} must hold a JSON object, found {type(obj).__name__}")
    return obj


def one_line(error: BaseException) -> str:
    """The first sentence of an exception's text, for embedding in a one-line message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(error).__name__
