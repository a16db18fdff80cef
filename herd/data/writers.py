"""Shard writers: JSONL (plain, .gz, .zst) and Parquet, written to a temporary name and renamed when complete.

Outputs are byte-reproducible (gzip without a timestamp, fixed zstd level), so a re-run gives identical files.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, BinaryIO, Literal, Self

from herd.data.document import Document
from herd.run_dir import AtomicFile

OutputFormat = Literal["jsonl", "jsonl.gz", "jsonl.zst", "parquet"]
ZSTD_LEVEL = 3


class ShardWriter:
    """Writes records to `path` in `format`; the file appears under its name only on `close()` (atomic rename)."""

    def __init__(self, path: Path, format: OutputFormat = "jsonl.zst") -> None:
        self.path = Path(path)
        self.format = format
        self._file = AtomicFile(self.path)
        self._rows: list[dict[str, Any]] = []
        self._raw: BinaryIO | None = None
        self._stream: BinaryIO | None = None
        if format != "parquet":
            self._raw = open(self._file.tmp, "wb")  # noqa: SIM115 -- closed by close() or abort()
            self._stream = _compressed(self._raw, format)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a JSON-ready dict)."""
        if self._stream is None:
            self._rows.append(record)
        else:
            self._stream.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")

    def write_document(self, doc: Document) -> None:
        """Append one document as {text, id, **metadata}."""
        self.write(doc.to_record())

    def close(self) -> Path:
        """Finish the file and move it to its final name."""
        if self._stream is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(self._rows), self._file.tmp)
        else:
            self._stream.close()
            if self._raw is not self._stream:
                self._raw.close()
        return self._file.commit()

    def abort(self) -> None:
        """Drop the partial file."""
        for stream in (self._stream, self._raw):
            if stream is not None and not stream.closed:
                stream.close()
        self._file.discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _compressed(raw: BinaryIO, format: OutputFormat) -> BinaryIO:
    if format == "jsonl.gz":
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
    if format == "jsonl.zst":
        try:
            import zstandard
        except ImportError:
            raise ImportError("writing .zst files needs the zstandard package: pip install zstandard") from None
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw, closefd=False)
    return raw


def suffix(format: OutputFormat) -> str:
    """The file suffix of `format`, e.g. `.jsonl.zst`."""
    return "." + format
