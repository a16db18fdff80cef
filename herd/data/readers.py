"""Readers: JSONL (plain, .gz, .zst), Parquet, text files and HF `datasets` saved to disk, into Documents.

Bad input never raises: a line or row that is not a usable document comes out as a `BadRecord` with its location,
and a file that breaks off or is corrupt yields the records before the damage, then a `DamagedInput`.
Large plain JSONL and Parquet files are read as several `InputPart`s (line-aligned byte ranges, row-group ranges).
"""

from __future__ import annotations

import gzip
import heapq
import io
import itertools
import json
import math
import mmap
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from herd.data.document import BadRecord, DamagedInput, Document
from herd.errors import HerdError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt",)
HF_DISK_MARKERS = ("state.json", "dataset_dict.json")  # what `Dataset.save_to_disk` leaves in its directory
Format = Literal["auto", "jsonl", "parquet", "text", "hf_disk"]
_SCAN_BYTES = 1 << 24  # newlines are counted this many bytes at a time
_ZSTD_READ_BYTES = 1 << 12  # compressed bytes decoded at a time: at most ~128 MB out (zstd tops out near 32,000:1)


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
    part_bytes: int = 1 << 26
    """Plain JSONL and Parquet files larger than this are read as parts of about this size (line-aligned byte
    ranges, row groups), each a task of its own; 0: never split by size."""

    def __post_init__(self) -> None:
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        if not self.paths:
            raise HerdError("input.paths is empty; list the files or directories to read")
        if self.part_bytes < 0:
            raise HerdError(f"input.part_bytes must be 0 (never split) or positive, got {self.part_bytes}")


@dataclass(frozen=True)
class InputPart:
    """A slice of one input: the whole file, or records [start, stop) counted in bytes for plain JSONL (the
    range starts at a line start) and in row groups for Parquet; `first` numbers its first line or row."""

    path: Path
    start: int = 0
    stop: int | None = None
    first: int = 1

    def __str__(self) -> str:
        return str(self.path) if self.stop is None else f"{self.path}@{self.start}:{self.stop}"


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


def input_parts(config: InputConfig, files: Sequence[Path], min_parts: int = 0) -> list[InputPart]:
    """`files` as parts, in reading order: plain JSONL and Parquet files over `config.part_bytes` are split,
    and with `min_parts` the largest splittable files split further until there are that many parts (as far as
    their lines and row groups allow). Other inputs (compressed, text, HF datasets) stay whole."""
    sizes = {path: path.stat().st_size for path in files if _splittable(path, config)}
    counts = {path: math.ceil(size / config.part_bytes) if config.part_bytes else 1 for path, size in sizes.items()}
    counts = {path: max(1, count) for path, count in counts.items()}
    extra = min_parts - (len(files) - len(sizes) + sum(counts.values()))
    heap = [(-size / counts[path], str(path), path) for path, size in sizes.items() if size]
    heapq.heapify(heap)
    for _ in range(max(0, extra) if heap else 0):  # one more part for the file with the largest parts
        _, name, path = heapq.heappop(heap)
        counts[path] += 1
        heapq.heappush(heap, (-sizes[path] / counts[path], name, path))
    parts: list[InputPart] = []
    for path in files:
        if counts.get(path, 1) == 1:
            parts.append(InputPart(path))
        elif _format_of(path, config.format) == "jsonl":
            parts.extend(InputPart(path, start, stop, first) for start, stop, first in _line_ranges(path, counts[path]))
        else:
            parts.extend(_row_group_parts(path, counts[path]))
    return parts


def read_file(source: Path | InputPart, config: InputConfig) -> Iterator[Document | BadRecord]:
    """The documents (and bad records) of one input unit or part of one, in file order."""
    part = source if isinstance(source, InputPart) else InputPart(source)
    path = part.path
    if path.is_dir():
        yield from _read_hf_disk(path, config)
        return
    kind = _format_of(path, config.format)
    if kind == "jsonl":
        yield from _read_jsonl(part, config)
    elif kind == "parquet":
        yield from _read_parquet(part, config)
    else:
        yield from _read_text(path, config)


def read_texts(config: InputConfig, sources: Iterable[Path | InputPart]) -> Iterator[str]:
    """The text of every document in `sources`, in order, for tools that need clean input (tokenizer training,
    tokenization): empty records are skipped, any other bad record is an error naming its location."""
    for source in sources:
        for item in read_file(source, config):
            if isinstance(item, Document):
                yield item.text
            elif isinstance(item, DamagedInput):
                raise _damage_error(item)
            elif item.reason != "empty":
                raise HerdError(
                    f"{item.location}: {item.reason} ({item.detail}); fix the record, "
                    "or clean the corpus with `herd data run`, which skips bad records"
                )


@contextmanager
def open_binary(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for binary reading, decompressing .gz and .zst; a stream that breaks off raises EOFError."""
    with open(path, "rb") as raw, _decoded(raw, path.name) as stream:
        yield stream


class StreamDamaged(ValueError):
    """A compressed stream the decoder rejects (the zstd counterpart of gzip's BadGzipFile and zlib.error)."""


_STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, StreamDamaged)


def _decoded(raw: BinaryIO, name: str) -> BinaryIO:
    """`raw` decompressed by its name's suffix (.gz, .zst), else itself; closing the result leaves `raw` open."""
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdFrames(raw))
    return raw


class _ZstdFrames(io.RawIOBase):
    """The frames of a .zst stream, decoded one after another. Hand-written because zstandard's `stream_reader`
    ends quietly at a frame cut short (its reader has no end-of-frame check); this raises EOFError there, as gzip
    does, and StreamDamaged for data the decoder rejects."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._zstd = _import("zstandard", "reading .zst files")
        self._decompressor = self._zstd.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False  # part of the current frame has been fed
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            chunk = self._raw.read(_ZSTD_READ_BYTES)
            if not chunk:
                if self._in_frame:
                    raise EOFError("the zstd stream ends inside a frame")
                return 0
            self._out = memoryview(self._feed(chunk))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            try:
                out.append(self._frame.decompress(chunk))
            except self._zstd.ZstdError as e:
                raise StreamDamaged(str(e)) from None
            self._in_frame = not self._frame.eof
            if self._in_frame:
                break
            chunk = self._frame.unused_data  # the next frame starts here
            self._frame = self._decompressor.decompressobj()
        return b"".join(out)


def _read_jsonl(part: InputPart, config: InputConfig) -> Iterator[Document | BadRecord]:
    path, position, lineno = part.path, part.start, part.first
    with open(path, "rb") as raw, _decoded(raw, path.name) as stream:
        if position:
            stream.seek(position)
        lines = iter(stream)
        while part.stop is None or position < part.stop:
            try:
                line = next(lines, None)
            except _STREAM_ERRORS as e:
                reason = "truncated_file" if isinstance(e, EOFError) else "damaged_file"
                detail = f"{e} (after {raw.tell():,} compressed bytes)"
                yield DamagedInput(f"{path}:{lineno}", reason, detail, str(path), lineno, raw.tell())
                return
            if line is None:
                return
            item = _parse_line(line, f"{path}:{lineno}", config)
            if isinstance(item, BadRecord) and not line.endswith(b"\n"):  # the last line, cut short
                offset = raw.tell() if stream is not raw else position
                detail = f"the last line breaks off without a newline ({item.reason}: {item.detail})"
                yield DamagedInput(item.location, "truncated_file", detail, str(path), lineno, offset)
                return
            if item is not None:
                yield item
            position += len(line)
            lineno += 1


def _parse_line(raw: bytes, where: str, config: InputConfig) -> Document | BadRecord | None:
    """The document one JSONL line holds; None for a blank line."""
    if not raw.strip():
        return None
    if len(raw) > config.max_doc_bytes:
        return BadRecord(where, "too_large", f"{len(raw)} bytes > input.max_doc_bytes={config.max_doc_bytes}")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return BadRecord(where, "invalid_utf8", str(e))
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return BadRecord(where, "invalid_json", f"{e.msg}: {line[:80]!r}")
    return _document(record, where, config)


def _read_parquet(part: InputPart, config: InputConfig) -> Iterator[Document | BadRecord]:
    pq = _import("pyarrow.parquet", "reading Parquet files", package="pyarrow")
    arrow_error = _import("pyarrow", "reading Parquet files").ArrowException
    row = part.first
    try:
        file = pq.ParquetFile(part.path)
        groups = range(part.start, file.num_row_groups if part.stop is None else part.stop)
        for batch in file.iter_batches(batch_size=1024, row_groups=list(groups)):
            for record in batch.to_pylist():
                yield _document(record, f"{part.path}:{row}", config)
                row += 1
    except arrow_error as e:
        yield DamagedInput(f"{part.path}:{row}", "damaged_file", str(e), str(part.path), row)


def _splittable(path: Path, config: InputConfig) -> bool:
    """Plain JSONL (seekable to a byte offset) and Parquet (row groups) files split into parts."""
    kind = _format_of(path, config.format)
    return path.is_file() and (kind == "parquet" or (kind == "jsonl" and not path.name.endswith((".gz", ".zst"))))


def _line_ranges(path: Path, n: int) -> list[tuple[int, int, int]]:
    """(start, stop, first line number) of up to `n` byte ranges of about equal size, each from a line start."""
    size = path.stat().st_size
    starts, lines = [0], [1]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for k in range(1, n):
            target = size * k // n  # the part starts at the first line start at or after this byte
            if target <= starts[-1]:
                continue
            newline = data.find(b"\n", target - 1)
            if newline < 0 or newline + 1 >= size:
                break
            lines.append(lines[-1] + _count_newlines(data, starts[-1], newline + 1))
            starts.append(newline + 1)
    return [(start, stop, line) for (start, stop), line in zip(itertools.pairwise([*starts, size]), lines)]


def _count_newlines(data: mmap.mmap, start: int, stop: int) -> int:
    return sum(data[i : min(i + _SCAN_BYTES, stop)].count(b"\n") for i in range(start, stop, _SCAN_BYTES))


def _row_group_parts(path: Path, n: int) -> list[InputPart]:
    """Up to `n` parts of consecutive row groups, about equal in count; `first` is each part's first row."""
    pq = _import("pyarrow.parquet", "reading Parquet files", package="pyarrow")
    try:
        metadata = pq.ParquetFile(path).metadata
    except _import("pyarrow", "reading Parquet files").ArrowException:  # stays whole; its reader reports the damage
        return [InputPart(path)]
    groups = metadata.num_row_groups
    bounds = sorted({groups * k // n for k in range(n)} | {groups})
    parts, first = [], 1
    for start, stop in itertools.pairwise(bounds):
        parts.append(InputPart(path, start, stop, first))
        first += sum(metadata.row_group(g).num_rows for g in range(start, stop))
    return parts


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


def good_documents(config: InputConfig) -> Iterator[Document]:
    """The usable documents of `config`'s inputs in order, skipping bad records, for readers other than `herd data
    run` (which counts them): a damaged file raises a HerdError naming it once its readable documents are out."""
    for path in input_files(config):
        for item in read_file(path, config):
            if isinstance(item, DamagedInput):
                raise _damage_error(item)
            if isinstance(item, Document):
                yield item


def read_documents(paths: Sequence[str | Path], **options: Any) -> Iterator[Document]:
    """The good documents under `paths` (files or directories), as `good_documents`; for quick scripts."""
    return good_documents(InputConfig(paths=[str(p) for p in paths], **options))


def _damage_error(item: DamagedInput) -> HerdError:
    return HerdError(
        f"{item.location}: {item.reason} ({item.detail}); replace the file, or keep its readable records with "
        "`herd data run` and allow_damaged_inputs: true"
    )


def corpus_texts(inputs: Sequence[str | Path]) -> tuple[list[Path], Iterator[str]]:
    """The input files under `inputs` (files or directories: JSONL, Parquet, text, HF datasets; compressed or not)
    and an iterator over their documents' texts, in order (bad records are errors, empty ones skipped)."""
    if not inputs:
        raise HerdError("no corpus inputs given; pass JSONL, Parquet or text files, or directories")
    config = InputConfig(paths=[str(path) for path in inputs], max_doc_bytes=sys.maxsize)  # whole books welcome
    files = input_files(config)
    return files, read_texts(config, files)
