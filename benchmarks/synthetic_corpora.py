"""A synthetic corpus with planted near-duplicates (known families), and pair precision/recall of a dedup.

Also paraphrases (semantic dedup) and a mixed-quality web corpus (quality classifier). Workloads, not a benchmark to
run: the data tests and benchmarks import them to measure against known answers; herd itself never does, so they are
not shipped (tests find benchmarks/ through pytest's `pythonpath`).
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


SYNONYMS = {
    "bought": "purchased",
    "buy": "purchase",
    "buys": "purchases",
    "has": "owns",
    "have": "own",
    "each": "every",
    "total": "overall",
    "friends": "pals",
    "friend": "pal",
    "needs": "requires",
    "need": "require",
    "wants": "would like",
    "gets": "receives",
    "get": "receive",
    "makes": "produces",
    "spends": "uses",
    "then": "afterwards",
    "store": "shop",
    "money": "cash",
    "dollars": "bucks",
    "big": "large",
    "small": "little",
    "many": "numerous",
    "gave": "handed",
    "give": "hand",
    "costs": "is priced at",
    "cost": "price",
    "days": "days",
    "week": "week",
    "more": "additional",
    "sold": "sells",
    "sells": "sold",
    "pays": "paid",
    "paid": "pays",
    "starts": "begins",
    "start": "begin",
    "finds": "discovers",
    "home": "house",
    "car": "automobile",
    "children": "kids",
    "job": "work",
    "twice": "two times",
    "half": "one half",
    "altogether": "in total",
}


def paraphrase(text: str, rng: np.random.Generator, rate: float = 0.8) -> str:
    """`text` with each word that has an entry in SYNONYMS swapped for it with probability `rate`: meaning kept,
    surface changed enough that few word 5-grams survive (MinHash misses it, embeddings do not)."""
    words = text.split(" ")
    for i, word in enumerate(words):
        core = word.rstrip(".,?!")
        if core.lower() in SYNONYMS and rng.random() < rate:
            swap = SYNONYMS[core.lower()]
            words[i] = (swap.capitalize() if core[:1].isupper() else swap) + word[len(core) :]
    return " ".join(words)


_NOUNS = (
    "ocean",
    "glacier",
    "enzyme",
    "galaxy",
    "economy",
    "poem",
    "molecule",
    "village",
    "battery",
    "garden",
    "cell",
    "river",
    "engine",
    "planet",
    "language",
    "market",
    "forest",
    "protein",
    "bridge",
    "theory",
    "city",
    "climate",
    "library",
    "circuit",
    "museum",
    "volcano",
    "harvest",
    "orbit",
    "painting",
    "treaty",
)
_VERBS = ("changes", "explains", "supports", "measures", "connects", "protects", "describes", "shapes", "limits")
_ADJECTIVES = ("important", "complex", "ancient", "efficient", "natural", "modern", "stable", "useful", "rare")
_SPAM = ("buy", "cheap", "deal", "click", "here", "free", "best", "price", "now", "offer", "sale", "win", "casino")


def quality_corpus(n: int = 1000, seed: int = 0) -> list[str]:
    """`n` synthetic web documents, about half well-formed prose paragraphs of varied length and half low-quality
    kinds (keyword spam, navigation lists, repeated lines, fragments): a labelled set for quality classifiers."""
    rng = np.random.default_rng(seed)

    def sentence() -> str:
        noun, adjective, verb = (
            (lambda: rng.choice(_NOUNS)),
            (lambda: rng.choice(_ADJECTIVES)),
            lambda: rng.choice(_VERBS),
        )
        return str(
            rng.choice(
                [
                    f"The {adjective()} {noun()} {verb()} the {noun()} of a {noun()}.",
                    f"In the {noun()}, every {adjective()} {noun()} {verb()} how the {noun()} works.",
                    f"Scientists say that a {noun()} {verb()} the {adjective()} {noun()} and its {noun()}.",
                    f"This is why the {noun()} is {adjective()} for {noun()} and {noun()} alike.",
                ]
            )
        )

    texts = []
    for _ in range(n):
        kind = rng.integers(8)
        if kind < 4:  # prose; some too short to pass Gopher's 50 words
            texts.append(" ".join(sentence() for _ in range(rng.integers(3, 12))))
        elif kind == 4:
            texts.append(" ".join(rng.choice(_SPAM, size=rng.integers(40, 200))))
        elif kind == 5:
            texts.append(
                "\n".join(f"- {rng.choice(_NOUNS).title()} {rng.choice(_SPAM)}" for _ in range(rng.integers(10, 40)))
            )
        elif kind == 6:
            texts.append("\n".join([sentence()] * int(rng.integers(5, 15))))
        else:
            texts.append(" ".join(" ".join(rng.choice(_NOUNS, size=3)) + " |" for _ in range(rng.integers(20, 60))))
    return texts
