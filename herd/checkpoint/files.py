"""File helpers the checkpoint formats share: reading JSON files, one-line error text.

Writes go through `herd.run_dir` (files are replaced, never overwritten, so a model memory-mapped from the old
file keeps working).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from herd.errors import HerdError


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
