"""Exact, URL and line-level (ccNet-style) deduplication.

Exact and URL dedup decide over the whole corpus; line dedup works within buckets of documents of a shard.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import xxhash

from herd.data.document import Document
from herd.data.stage import DropIndices, Stage, StageContext

_NON_WORD = re.compile(r"[^\w]+")
_DIGIT = re.compile(r"\d")


def normalized_text(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: what exact dedup compares."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


@dataclass
class ExactDedup(DropIndices):
    """Keep the first document (in shard, then file, order) of each normalised text; drop the rest."""

    name: ClassVar[str] = "exact_dedup"
    reason: ClassVar[str] = "exact_duplicate"
    normalize: bool = True
    """Compare normalised text (case, punctuation, whitespace ignored) instead of the raw text."""

    def signature(self, doc: Document) -> int:
        text = normalized_text(doc.text) if self.normalize else doc.text
        return xxhash.xxh3_128_intdigest(text.encode("utf-8"))

    def decide(self, shards: Sequence[list[int]]) -> list[set[int]]:
        seen: set[int] = set()
        drops: list[set[int]] = []
        for hashes in shards:
            drop = set()
            for i, h in enumerate(hashes):
                if h in seen:
                    drop.add(i)
                seen.add(h)
            drops.append(drop)
        return drops


@dataclass
class UrlDedup(DropIndices):
    """Keep one document per URL: the most recent by `date_key` (ISO-8601 strings or numbers); ties keep the first.

    Documents without a URL are kept.
    """

    name: ClassVar[str] = "url_dedup"
    reason: ClassVar[str] = "url_duplicate"
    url_key: str = "url"
    date_key: str = "date"

    def signature(self, doc: Document) -> tuple[str, Any] | None:
        url = doc.metadata.get(self.url_key)
        if not url:
            return None
        return str(url).strip().rstrip("/").lower(), doc.metadata.get(self.date_key)

    def decide(self, shards: Sequence[list[tuple[str, Any] | None]]) -> list[set[int]]:
        best: dict[str, tuple[Any, int, int]] = {}  # url -> (date, shard, position) of the one kept so far
        for s, signatures in enumerate(shards):
            for i, sig in enumerate(signatures):
                if sig is None:
                    continue
                url, date = sig
                kept = best.get(url)
                if kept is None or _newer(date, kept[0]):
                    best[url] = (date, s, i)
        keep = {(s, i) for _, s, i in best.values()}
        return [
            {i for i, sig in enumerate(signatures) if sig is not None and (s, i) not in keep}
            for s, signatures in enumerate(shards)
        ]


def _newer(date: Any, than: Any) -> bool:
    if date is None:
        return False
    if than is None:
        return True
    return str(date) > str(than) if isinstance(date, str) or isinstance(than, str) else date > than


@dataclass
class LineDedup(Stage):
    """ccNet-style line dedup: in each bucket of `bucket_size` documents, lines seen more than `max_repeats` times
    (after lower-casing and digits -> 0) are removed from every document; a document left empty is dropped."""

    name: ClassVar[str] = "line_dedup"
    bucket_size: int = 10_000
    """Documents per bucket (within a shard) over which lines are counted."""
    max_repeats: int = 1
    """A line occurring more often than this in a bucket is removed everywhere in it."""
    min_line_chars: int = 1
    """Shorter (normalised) lines are never removed."""

    def process(self, docs: Iterator[Document], ctx: StageContext) -> Iterator[Document]:
        bucket: list[Document] = []
        for doc in docs:
            bucket.append(doc)
            if len(bucket) == self.bucket_size:
                yield from self._bucket(bucket, ctx)
                bucket = []
        yield from self._bucket(bucket, ctx)

    def _bucket(self, bucket: list[Document], ctx: StageContext) -> Iterator[Document]:
        keys = [[self._key(line) for line in doc.text.split("\n")] for doc in bucket]
        counts = Counter(k for doc_keys in keys for k in doc_keys if k is not None)
        for doc, doc_keys in zip(bucket, keys):
            lines = doc.text.split("\n")
            kept = [line for line, k in zip(lines, doc_keys) if k is None or counts[k] <= self.max_repeats]
            if len(kept) == len(lines):
                yield doc
                continue
            text = "\n".join(kept).strip()
            if not text:
                ctx.drop(doc, "all_lines_duplicated")
                continue
            doc.text = text
            ctx.stats.modified += 1
            yield doc

    def _key(self, line: str) -> int | None:
        normalized = _DIGIT.sub("0", " ".join(line.lower().split()))
        if len(normalized) < self.min_line_chars:
            return None
        return xxhash.xxh3_64_intdigest(normalized.encode("utf-8"))
