"""A synthetic corpus with planted near-duplicates (known families), and pair precision/recall of a dedup.

Used by the dedup tests and benchmarks to measure MinHash recall and precision against known answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "shi", "vo", "den", "par", "qu", "ix", "bel", "sor", "an", "te")


@dataclass
class PlantedCorpus:
    """Texts and each text's family (the index of the original it was copied from; originals are their own)."""

    texts: list[str]
    families: list[int]


def planted_corpus(
    n_originals: int = 1000,
    copies_per_dup: int = 1,
    dup_fraction: float = 0.3,
    words: tuple[int, int] = (150, 400),
    edit_rate: float = 0.01,
    vocab_size: int = 20_000,
    seed: int = 0,
) -> PlantedCorpus:
    """`n_originals` random Zipfian texts; a `dup_fraction` of them get `copies_per_dup` near-copies, each with
    `edit_rate` of its words replaced (5-gram Jaccard ~0.9 at 1%); the whole corpus is shuffled."""
    rng = np.random.default_rng(seed)
    vocab = np.array(["".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))) + str(i % 7) for i in range(vocab_size)])
    ranks = np.arange(1, vocab_size + 1)
    probs = (1 / ranks) / (1 / ranks).sum()
    texts: list[str] = []
    families: list[int] = []
    for i in range(n_originals):
        base = rng.choice(vocab, size=rng.integers(*words), p=probs)
        texts.append(" ".join(base))
        families.append(i)
        if rng.random() < dup_fraction:
            for _ in range(copies_per_dup):
                copy = base.copy()
                where = rng.choice(len(copy), size=max(1, round(edit_rate * len(copy))), replace=False)
                copy[where] = rng.choice(vocab, size=len(where), p=probs)
                texts.append(" ".join(copy))
                families.append(i)
    order = rng.permutation(len(texts))
    return PlantedCorpus(texts=[texts[j] for j in order], families=[families[j] for j in order])


def pair_precision_recall(predicted: list[int] | np.ndarray, families: list[int]) -> tuple[float, float]:
    """Precision and recall of the duplicate pairs implied by `predicted` cluster labels against `families`."""

    def pairs(labels: list[int] | np.ndarray) -> set[tuple[int, int]]:
        groups: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            groups.setdefault(int(label), []).append(i)
        return {pair for members in groups.values() for pair in combinations(members, 2)}

    found, truth = pairs(predicted), pairs(families)
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    return precision, recall
