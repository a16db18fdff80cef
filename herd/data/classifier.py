"""Fast text classifiers for quality and domain: hashed word n-grams (fastText-like) or MiniLM embeddings, then
logistic regression by SGD (scikit-learn); saved as one .npz of weights and options (no pickle), scored with numpy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from herd.errors import HerdError
from herd.run_dir import atomic_open

Features = Literal["hashed", "embedding"]


@dataclass
class ClassifierOptions:
    """How texts become features."""

    features: Features = "hashed"
    """`hashed`: word 1..ngram counts hashed into 2^hash_bits columns; `embedding`: MiniLM sentence embeddings."""
    ngram: int = 2
    hash_bits: int = 20
    embedding_model: str | None = None
    """With `features: embedding`: a sentence-transformers folder; None: the bundled all-MiniLM-L6-v2."""
    alpha: float = 1e-5
    """L2 regularisation strength of the logistic regression."""


@dataclass
class TextClassifier:
    """A linear classifier over text features: `classes` and their weights, `coef` (classes or 1, dim)."""

    options: ClassifierOptions
    classes: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)
    """Held-out evaluation recorded at training time (accuracy, AUC vs the teacher)."""

    def features(self, texts: Sequence[str]) -> Any:
        """The (n, dim) feature matrix of `texts` (sparse for hashed n-grams)."""
        if self.options.features == "embedding":
            from herd.data.embed import embed

            return embed(texts, self.options.embedding_model)
        return _vectorizer(self.options.ngram, self.options.hash_bits).transform(texts)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(n, classes) class probabilities."""
        p = 1.0 / (1.0 + np.exp(-(np.asarray(self.features(texts) @ self.coef.T) + self.intercept)))
        if len(self.classes) == 2:  # scikit-learn's binary model: one weight row, for the second class
            return np.concatenate([1.0 - p, p], axis=1)
        return p / p.sum(axis=1, keepdims=True)  # one-vs-rest probabilities, normalised as scikit-learn does

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable class of each text."""
        return [self.classes[i] for i in self.probabilities(texts).argmax(axis=1)]

    def score(self, texts: Sequence[str], positive: str) -> np.ndarray:
        """(n,) probability of class `positive` for each text."""
        if positive not in self.classes:
            raise HerdError(f"classifier has no class {positive!r}; its classes are {self.classes}")
        return self.probabilities(texts)[:, self.classes.index(positive)]

    def save(self, path: str | Path) -> Path:
        """Write the classifier to `path` (a .npz file), atomically."""
        meta = {"options": asdict(self.options), "classes": self.classes, "metrics": self.metrics}
        with atomic_open(path, "wb") as f:
            np.savez(f, coef=self.coef, intercept=self.intercept, meta=np.array(json.dumps(meta)))
        return Path(path)


def train_classifier(
    texts: Sequence[str], labels: Sequence[str], options: ClassifierOptions | None = None, seed: int = 0
) -> TextClassifier:
    """Fit logistic regression (SGD on the log loss, one-vs-rest for several classes) to `labels`; deterministic
    for `seed`. SGD, as fastText does: scikit-learn's L-BFGS takes seconds per thousand texts on 2^20 features."""
    from sklearn.linear_model import SGDClassifier

    options = options or ClassifierOptions()
    labels = [str(label) for label in labels]
    if len(set(labels)) < 2:
        raise HerdError(f"a classifier needs texts of at least two labels, got {sorted(set(labels))}; label more texts")
    empty = TextClassifier(options, [], np.zeros(0), np.zeros(0))
    model = SGDClassifier(loss="log_loss", alpha=options.alpha, max_iter=100, tol=1e-4, random_state=seed)
    model.fit(empty.features(texts), labels)
    return TextClassifier(options, [str(c) for c in model.classes_], model.coef_, model.intercept_)


def load_classifier(path: str | Path) -> TextClassifier:
    """A classifier written by `TextClassifier.save`."""
    return _load(str(Path(path).resolve()))


@lru_cache(maxsize=4)
def _load(path: str) -> TextClassifier:
    if not Path(path).is_file():
        raise HerdError(f"classifier not found: {path}; train one with herd.data.quality_train.train_quality")
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        return TextClassifier(
            ClassifierOptions(**meta["options"]), meta["classes"], data["coef"], data["intercept"], meta["metrics"]
        )


@lru_cache(maxsize=4)
def _vectorizer(ngram: int, hash_bits: int) -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        ngram_range=(1, ngram), n_features=2**hash_bits, alternate_sign=False, norm="l2", lowercase=True
    )
