"""The unit that flows through a data pipeline: a document's text, its id and free-form metadata.

Also the `BadRecord` a reader yields for input it cannot turn into a document (with its file:line), and the
`DamagedInput` it yields last for a file that breaks off or is corrupt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Document:
    """One document: `text`, a unique-per-corpus `id`, and `metadata` carried along (url, date, source...)."""

    text: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    sizes: tuple[str, int, int] | None = field(default=None, init=False, repr=False, compare=False)
    """Cache of (text, UTF-8 bytes, tokens) that stats fill; valid while `text` is that same string."""

    def to_record(self, text_key: str = "text", id_key: str = "id") -> dict[str, Any]:
        """The JSON-ready record a writer stores: text, id, then the metadata fields."""
        return {text_key: self.text, id_key: self.id, **self.metadata}


@dataclass(frozen=True, slots=True)
class BadRecord:
    """Input a reader skipped: where it is (`path:line` or `path:row`), a reason code and a short excerpt."""

    location: str
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DamagedInput(BadRecord):
    """A file that breaks off (`truncated_file`) or is corrupt (`damaged_file`), the last item its reader yields:
    every line (row) before `line` was read, nothing from it on. `offset`: the file byte where reading stopped
    (the cut line's start in a plain file; the compressed bytes read when the decoder failed); None for Parquet."""

    path: str = ""
    line: int = 0
    offset: int | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON-ready entry stats.json and report.md list."""
        return {"file": self.path, "reason": self.reason, "line": self.line, "offset": self.offset,
                "detail": self.detail}
