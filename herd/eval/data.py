"""Benchmark files on disk: the official releases (HF datasets' parquet / JSONL / JSON / CSV layouts)
read as lists of records, and the one-line error that says which files to put where when they are missing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from herd.errors import HerdError

_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class MissingData(HerdError):
    """A benchmark's files are not where they were looked for; the message says what to put there (callers that
    know how the directory was chosen add how to choose another)."""


def find_split(task_dir: Path, split: str, *, source: str) -> list[Path]:
    """The files of one split under `task_dir`, searched recursively: names starting with `split`
    (test-00000-of-00001.parquet, test.jsonl) or inside a `split` folder (MATH's test/algebra/1.json); raises one
    MissingData line naming the files to add."""
    files = sorted(
        p for p in task_dir.rglob("*")
        if p.is_file() and p.suffix in _SUFFIXES
        and (p.name.startswith(split) or split in p.relative_to(task_dir).parts[:-1])
    ) if task_dir.is_dir() else []
    if not files:
        raise MissingData(
            f"no {split!r} split in {task_dir}: put the {split} files of {source} there "
            f"(e.g. {task_dir}/{split}.jsonl or {task_dir}/{split}-00000-of-00001.parquet)"
        )
    return files


def require_file(path: Path, *, source: str) -> Path:
    """`path` if it exists, else one MissingData line saying what to put there."""
    if not path.is_file():
        raise MissingData(f"missing {path}: put {source} there")
    return path


def read_records(paths: list[Path] | Path) -> list[dict[str, Any]]:
    """All records of JSONL, JSON (a list, {"examples": [...]} as BIG-Bench, or one record), parquet or CSV files."""
    records: list[dict[str, Any]] = []
    for path in [paths] if isinstance(paths, Path) else paths:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                records += [json.loads(line) for line in f if line.strip()]
        elif path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            records += data if isinstance(data, list) else data.get("examples", [data])
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            records += pq.read_table(path).to_pylist()
        elif path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                records += list(csv.DictReader(f))
        else:
            raise HerdError(f"cannot read {path}: expected one of {', '.join(_SUFFIXES)}")
    return records
