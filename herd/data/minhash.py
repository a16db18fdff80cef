"""MinHash-LSH near-duplicate removal: word n-gram shingles, numpy-vectorised permutations, bands x rows buckets.

Written here because datasketch hashes one document at a time in Python and keeps its index in memory; this
computes all permutations of a document in one numpy operation and groups band keys by sorting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import xxhash

from herd.data.document import Document
from herd.data.stage import DropIndices, positions_per_shard
from herd.errors import HerdError

_WORD = re.compile(r"\w+")


@dataclass
class MinHasher:
    """MinHash signatures of texts: `num_perm` multiply-shift hashes of each text's word `ngram` shingles."""

    ngram: int = 5
    num_perm: int = 112
    seed: int = 1

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        # h(x) = ((a * x + b) mod 2^64) >> 32 is a universal hash of 32-bit x (Dietzfelbinger's multiply-shift).
        self._a = rng.integers(1, 2**63, size=self.num_perm, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64)
        self._mix = rng.integers(1, 2**63, size=self.ngram, dtype=np.uint64) | np.uint64(1)

    def shingles(self, text: str) -> np.ndarray:
        """32-bit hashes of the text's word n-grams (lower-cased words; a short text is one shingle)."""
        words = _WORD.findall(text.lower())
        if not words:
            return np.zeros(1, dtype=np.uint64)
        hashes = np.fromiter(
            (xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words)
        )
        n = min(self.ngram, len(words))
        combined = hashes[: len(words) - n + 1] * self._mix[0]
        for j in range(1, n):
            combined += hashes[j : len(words) - n + 1 + j] * self._mix[j]
        return combined >> np.uint64(32)

    def signature(self, text: str) -> np.ndarray:
        """The (num_perm,) uint32 MinHash signature of `text`."""
        x = self.shingles(text)
        return ((x[:, None] * self._a[None, :] + self._b[None, :]) >> np.uint64(32)).min(axis=0).astype(np.uint32)


def band_keys(signature: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands,) uint64 keys: a 64-bit hash of each band's `rows` signature values, salted with the band number."""
    assert signature.shape[-1] >= bands * rows, "signature shorter than bands * rows"
    data = signature[: bands * rows].reshape(bands, rows)
    return np.fromiter(
        (xxhash.xxh3_64_intdigest(band.tobytes(), seed=b) for b, band in enumerate(data)), dtype=np.uint64, count=bands
    )


def duplicate_components(keys: np.ndarray) -> np.ndarray:
    """For (n_docs, bands) band keys: each document's component label, the smallest index it shares a bucket with
    (directly or through others). Documents whose label is their own index are the ones to keep."""
    n = len(keys)
    labels = np.arange(n)
    if n == 0:
        return labels
    sources, targets = [], []
    for band in keys.T:
        order = np.argsort(band, kind="stable")
        same = band[order[1:]] == band[order[:-1]]
        sources.append(order[:-1][same])
        targets.append(order[1:][same])
    a, b = np.concatenate(sources), np.concatenate(targets)
    while len(a):
        low = np.minimum(labels[a], labels[b])
        changed = (labels[a] != low) | (labels[b] != low)
        if not changed.any():
            break
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:  # pointer jumping: point every label at its label's label
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
    return labels


@dataclass
class MinHashDedup(DropIndices):
    """Near-duplicate removal: documents whose signatures agree on all `rows` of any of `bands` bands are linked;
    each connected group keeps its first document (shard, then file, order).

    A pair of Jaccard similarity s is caught with probability 1 - (1 - s^rows)^bands; the default 14 x 8
    (datatrove's and FineWeb's) has its 50% point at s ~ 0.72 and catches s >= 0.85 with probability > 0.98.
    """

    name: ClassVar[str] = "minhash_dedup"
    reason: ClassVar[str] = "near_duplicate"
    ngram: int = 5
    """Words per shingle."""
    bands: int = 14
    rows: int = 8
    seed: int = 1

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.bands < 1 or self.rows < 1:
            raise HerdError("minhash_dedup: ngram, bands and rows must all be at least 1")
        self._hasher = MinHasher(ngram=self.ngram, num_perm=self.bands * self.rows, seed=self.seed)

    def signature(self, doc: Document) -> np.ndarray:
        return band_keys(self._hasher.signature(doc.text), self.bands, self.rows)

    def index(self, docs: Iterable[Document]) -> np.ndarray:
        rows = [self.signature(doc) for doc in docs]
        return np.stack(rows) if rows else np.zeros((0, self.bands), dtype=np.uint64)

    def decide(self, shards: Sequence[np.ndarray]) -> list[set[int]]:
        labels = duplicate_components(np.concatenate(list(shards)))
        drop = np.flatnonzero(labels != np.arange(len(labels)))
        return positions_per_shard(drop, [len(s) for s in shards])


def near_duplicate_groups(
    texts: Sequence[str], ngram: int = 5, bands: int = 14, rows: int = 8, seed: int = 1
) -> np.ndarray:
    """Component labels of `texts` (see `duplicate_components`); for evaluation and scripts."""
    hasher = MinHasher(ngram=ngram, num_perm=bands * rows, seed=seed)
    keys = np.stack([band_keys(hasher.signature(t), bands, rows) for t in texts]) if texts else np.zeros((0, bands))
    return duplicate_components(keys.astype(np.uint64))
