"""Readers: JSONL (plain, .gz, .zst), Parquet, text files and HF `datasets` saved to disk, into Documents.

Bad input never raises: a line or row that is not a usable document comes out as a `BadRecord` with its location.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from herd.data.document import BadRecord, Document
from herd.errors import HerdError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt",)
HF_DISK_MARKERS = ("state.json", "dataset_dict.json")  # what `Dataset.save_to_disk` leaves in its directory
Format = Literal["auto", "jsonl", "parquet", "text", "hf_disk"]


@dataclass
class InputConfig:
    """Where documents come from and how a record becomes a Document."""

    paths: list[str]
    """Files or directories; directories are searched (sorted) for .jsonl[.gz|.zst], .parquet and .txt files."""
    format: Format = "auto"
    """File format; `auto` goes by suffix (and reads a directory holding `state.json` as an HF dataset)."""
    text_key: str = "text"
    """Record field holding the document text."""
    id_key: str = "id"
    """Record field holding the document id; absent ids become `path:line`."""
    max_doc_bytes: int = 10_000_000
    """Records larger than this (UTF-8 bytes) are skipped as `too_large`."""

    def __post_init__(self) -> None:
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        if not self.paths:
            raise HerdError("input.paths is empty; list the files or directories to read")


def input_files(config: InputConfig) -> list[Path]:
    """The input units named by `config.paths`: files as given, directories expanded in sorted order."""
    files: list[Path] = []
    for path in map(Path, config.paths):
        if path.is_dir() and (config.format == "hf_disk" or _is_hf_disk(path)):
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _format_of(p, config.format) is not None)
            found = [p for p in found if not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)]
            if not found:
                raise HerdError(f"no .jsonl/.jsonl.gz/.jsonl.zst/.parquet/.txt files under {path}; check input.paths")
            files.extend(found)
        elif path.is_file():
            if _format_of(path, config.format) is None:
                raise HerdError(f"{path}: unknown file type; set input.format to jsonl, parquet or text")
            files.append(path)
        else:
            raise HerdError(f"input not found: {path}; fix input.paths")
    return files


def read_file(path: Path, config: InputConfig) -> Iterator[Document | BadRecord]:
    """The documents (and bad records) of one input unit, in file order."""
    if path.is_dir():
        yield from _read_hf_disk(path, config)
        return
    kind = _format_of(path, config.format)
    if kind == "jsonl":
        yield from _read_jsonl(path, config)
    elif kind == "parquet":
        yield from _read_parquet(path, config)
    else:
        yield from _read_text(path, config)


def open_binary(path: Path) -> BinaryIO:
    """`path` opened for binary reading, decompressing .gz and .zst."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.name.endswith(".zst"):
        zstandard = _import("zstandard", "reading .zst files")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _read_jsonl(path: Path, config: InputConfig) -> Iterator[Document | BadRecord]:
    with open_binary(path) as stream:
        for lineno, raw in enumerate(stream, start=1):
            where = f"{path}:{lineno}"
            if not raw.strip():
                continue  # a blank line holds no record
            if len(raw) > config.max_doc_bytes:
                yield BadRecord(where, "too_large", f"{len(raw)} bytes > input.max_doc_bytes={config.max_doc_bytes}")
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadRecord(where, "invalid_utf8", str(e))
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield BadRecord(where, "invalid_json", f"{e.msg}: {line[:80]!r}")
                continue
            yield _document(record, where, config)


def _read_parquet(path: Path, config: InputConfig) -> Iterator[Document | BadRecord]:
    pq = _import("pyarrow.parquet", "reading Parquet files", package="pyarrow")
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield _document(record, f"{path}:{row}", config)


def _read_text(path: Path, config: InputConfig) -> Iterator[Document | BadRecord]:
    raw = path.read_bytes()
    where = f"{path}:1"
    if len(raw) > config.max_doc_bytes:
        yield BadRecord(where, "too_large", f"{len(raw)} bytes > input.max_doc_bytes={config.max_doc_bytes}")
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        yield BadRecord(where, "invalid_utf8", str(e))
        return
    yield _document({config.text_key: text, config.id_key: str(path)}, where, config)


def _read_hf_disk(path: Path, config: InputConfig) -> Iterator[Document | BadRecord]:
    datasets = _import("datasets", "reading HF datasets saved to disk")
    loaded = datasets.load_from_disk(str(path))
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, dataset in splits:
        prefix = f"{path}/{split}" if split else str(path)
        for row, record in enumerate(dataset, start=1):
            yield _document(record, f"{prefix}:{row}", config)


def _document(record: Any, where: str, config: InputConfig) -> Document | BadRecord:
    if not isinstance(record, dict):
        return BadRecord(where, "invalid_json", f"a record must be a JSON object, got {type(record).__name__}")
    text = record.get(config.text_key)
    if not isinstance(text, str):
        return BadRecord(where, "missing_text", f"no string {config.text_key!r} field (keys: {sorted(record)[:8]})")
    if not text.strip():
        return BadRecord(where, "empty", "text is empty or whitespace only")
    try:
        n_bytes = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return BadRecord(where, "invalid_utf8", "text holds a lone surrogate escape")
    if n_bytes > config.max_doc_bytes:
        return BadRecord(where, "too_large", f"text over input.max_doc_bytes={config.max_doc_bytes}")
    doc_id = record.get(config.id_key)
    metadata = {k: v for k, v in record.items() if k not in (config.text_key, config.id_key)}
    return Document(text=text, id=where if doc_id is None else str(doc_id), metadata=metadata)


def _format_of(path: Path, format: Format) -> str | None:
    if format != "auto":
        return format
    name = path.name
    for kind, suffixes in (("jsonl", JSONL_SUFFIXES), ("parquet", PARQUET_SUFFIXES), ("text", TEXT_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def _is_hf_disk(path: Path) -> bool:
    return any((path / marker).is_file() for marker in HF_DISK_MARKERS)


def _import(module: str, purpose: str, package: str | None = None) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(f"{purpose} needs the {package or module} package: pip install {package or module}") from None


def read_documents(paths: Sequence[str | Path], **options: Any) -> Iterator[Document]:
    """The good documents under `paths` (files or directories), skipping bad records; for quick scripts."""
    config = InputConfig(paths=[str(p) for p in paths], **options)
    for path in input_files(config):
        for item in read_file(path, config):
            if isinstance(item, Document):
                yield item
