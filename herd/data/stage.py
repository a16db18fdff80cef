"""The stage protocol: a stage maps an iterator of documents to an iterator, reporting drops with a reason code.

`DocumentStage` handles one document at a time; `GlobalStage` (dedup, corpus statistics) sees the whole corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np

from herd.data.document import Document
from herd.data.stats import StageStats


@dataclass
class StageContext:
    """What a stage reports to while it runs on one shard: its stats and an optional writer of dropped documents."""

    stats: StageStats
    shard: int = 0
    on_drop: Callable[[Document, str], None] | None = None

    def drop(self, doc: Document, reason: str) -> None:
        """Count `doc` as dropped for `reason` (and hand it to the dropped-documents writer, if any)."""
        self.stats.drop(reason)
        if self.on_drop is not None:
            self.on_drop(doc, reason)


class Stage:
    """A pipeline step. Subclasses are dataclasses whose fields are their (documented) options."""

    name: ClassVar[str] = "stage"

    def setup(self) -> None:
        """Load what the stage needs (models, word lists) once per worker, before its first shard."""

    def process(self, docs: Iterator[Document], ctx: StageContext) -> Iterator[Document]:
        """The kept documents of `docs`; dropped ones go to `ctx.drop(doc, reason)`."""
        raise NotImplementedError


class DocumentStage(Stage):
    """A stage deciding one document at a time: filters return a reason code, mappers edit `doc.text` in place."""

    def apply(self, doc: Document) -> str | None:
        """Inspect or edit `doc`; return a reason code to drop it, None to keep it."""
        raise NotImplementedError

    def process(self, docs: Iterator[Document], ctx: StageContext) -> Iterator[Document]:
        for doc in docs:
            text = doc.text
            reason = self.apply(doc)
            if reason is None:
                if doc.text is not text:
                    ctx.stats.modified += 1
                yield doc
            else:
                ctx.drop(doc, reason)


class GlobalStage(Stage):
    """A stage that needs the whole corpus: index each shard, decide once over all shards, then run per shard.

    The executor stores each shard's `index`, calls `decide` once, and runs `process` on a shard with
    `self.decision` set to that shard's part of the decision.
    """

    decision: Any = None

    def signature(self, doc: Document) -> Any:
        """What `decide` needs to know of `doc` (a hash, MinHash band keys, a url and date...)."""
        raise NotImplementedError

    def index(self, docs: Iterator[Document]) -> Any:
        """A shard's summary for `decide` (must consume `docs`); by default the list of document signatures."""
        return [self.signature(doc) for doc in docs]

    def decide(self, shards: Sequence[Any]) -> list[Any]:
        """One decision per shard from every shard's index (in shard order)."""
        raise NotImplementedError


class DropIndices(GlobalStage):
    """Base of dedup stages: `decide` yields, per shard, the set of positions of the documents to drop."""

    reason: ClassVar[str] = "duplicate"

    def process(self, docs: Iterator[Document], ctx: StageContext) -> Iterator[Document]:
        drop = self.decision or frozenset()
        for i, doc in enumerate(docs):
            if i in drop:
                ctx.drop(doc, self.reason)
            else:
                yield doc


def positions_per_shard(positions: np.ndarray, sizes: Sequence[int]) -> list[set[int]]:
    """Corpus-wide positions (documents numbered across shards in order) split into per-shard position sets."""
    offsets = np.cumsum([0, *sizes])
    return [set((positions[(positions >= lo) & (positions < hi)] - lo).tolist()) for lo, hi in pairwise(offsets)]
