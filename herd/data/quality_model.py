"""Model-based quality filtering: train a fast classifier on a teacher's labels of a document sample, and the
`quality_classifier` stage that scores every document with it (threshold or keep-top-fraction).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from herd.config_overrides import apply_overrides, from_dict, read_config_file
from herd.data.classifier import ClassifierOptions, TextClassifier, load_classifier, train_classifier
from herd.data.document import Document
from herd.data.readers import InputConfig, good_documents
from herd.data.stage import GlobalStage, StageContext
from herd.data.teachers import QUALITY_PROMPT, PromptTeacher, RuleTeacher, Teacher
from herd.errors import HerdError
from herd.run_dir import write_text


@dataclass
class QualityTrainConfig:
    """Training of a quality classifier (`herd data quality-train CONFIG.yaml`)."""

    input: InputConfig
    out: str
    """Where the classifier goes (a .npz file; its metrics also go to <out>.json)."""
    teacher: str = "rules"
    """`rules`: the heuristic filters label; else a model `herd.load` takes, judging `prompt` (yes vs no)."""
    prompt: str = QUALITY_PROMPT
    sample: int = 10_000
    """Documents the teacher labels (a uniform sample of the input)."""
    held_out: float = 0.2
    """Share of the labelled sample kept out of training to measure agreement with the teacher."""
    classifier: ClassifierOptions = field(default_factory=ClassifierOptions)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.held_out < 1.0:
            raise HerdError(f"held_out must be between 0 and 1, got {self.held_out}")
        if self.sample < 10:
            raise HerdError(f"sample must be at least 10 documents, got {self.sample}")


def train_quality(config: str | Path | QualityTrainConfig, teacher: Teacher | None = None) -> TextClassifier:
    """Label a sample with the teacher (`teacher` overrides the config's), fit the classifier on all but a held-out
    share, record held-out accuracy and AUC against the teacher, and save it to `config.out`."""
    if not isinstance(config, QualityTrainConfig):
        config = from_dict(QualityTrainConfig, apply_overrides(read_config_file(config), ()))
    teacher = teacher or _teacher(config)
    texts = sample_texts(config.input, config.sample, config.seed)
    labels = [str(label) for label in teacher(texts)]
    if len(set(labels)) < 2:
        raise HerdError(f"the teacher gave every sampled text the label {labels[0]!r}; sample more varied documents")
    order = np.random.default_rng(config.seed).permutation(len(texts))
    n_test = max(1, round(config.held_out * len(texts)))
    test, train = order[:n_test], order[n_test:]
    model = train_classifier([texts[i] for i in train], [labels[i] for i in train], config.classifier, config.seed)
    model.metrics = evaluate(model, [texts[i] for i in test], [labels[i] for i in test])
    model.metrics.update(train_docs=len(train), label_counts=dict(sorted(_counts(labels).items())))
    model.save(config.out)
    write_text(str(config.out) + ".json", json.dumps({"config": asdict(config), **model.metrics}, indent=2))
    return model


def evaluate(model: TextClassifier, texts: Sequence[str], labels: Sequence[str], positive: str = "good") -> dict:
    """Agreement with the teacher's `labels`: accuracy, and ROC AUC of the `positive` score (binary labels)."""
    from sklearn.metrics import roc_auc_score

    labels = [str(label) for label in labels]
    metrics: dict[str, Any] = {
        "held_out_docs": len(labels),
        "accuracy": float(np.mean([p == t for p, t in zip(model.predict(texts), labels)])),
    }
    if positive in model.classes and len(set(labels)) == 2:
        truth = [label == positive for label in labels]
        metrics["auc"] = float(roc_auc_score(truth, model.score(texts, positive)))
    return metrics


def sample_texts(input: InputConfig, n: int, seed: int = 0) -> list[str]:
    """A uniform sample of `n` document texts (reservoir sampling, one pass; deterministic for `seed`)."""
    rng = np.random.default_rng(seed)
    sample: list[str] = []
    seen = 0
    for doc in good_documents(input):
        seen += 1
        if len(sample) < n:
            sample.append(doc.text)
        elif (j := int(rng.integers(seen))) < n:
            sample[j] = doc.text
    if not sample:
        raise HerdError(f"no documents found in {input.paths}; check input.paths and input.text_key")
    return sample


def _teacher(config: QualityTrainConfig) -> Teacher:
    if config.teacher == "rules":
        return RuleTeacher()
    from herd.checkpoint import load

    model, tokenizer = load(config.teacher)
    return PromptTeacher(model.eval(), tokenizer, config.prompt)


def _counts(labels: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts


@dataclass
class QualityClassifierFilter(GlobalStage):
    """Score every document with a trained classifier (the score goes to `metadata[score_key]`); keep those
    scoring at least `threshold`, or, with `keep_top_fraction`, the best fraction of the whole corpus."""

    name: ClassVar[str] = "quality_classifier"
    model_path: str = ""
    """A classifier from `train_quality` (.npz)."""
    positive: str = "good"
    """The class whose probability is the score."""
    threshold: float = 0.5
    keep_top_fraction: float | None = None
    """Keep this share of documents, best scores first (overrides `threshold`)."""
    score_key: str = "quality_score"

    def __post_init__(self) -> None:
        if not self.model_path:
            raise HerdError("quality_classifier needs model_path: a classifier trained by herd data quality-train")
        if self.keep_top_fraction is not None and not 0.0 < self.keep_top_fraction <= 1.0:
            raise HerdError(f"quality_classifier.keep_top_fraction must be in (0, 1], got {self.keep_top_fraction}")

    def index(self, docs: Iterator[Document]) -> np.ndarray:
        texts = [doc.text for doc in docs]
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return load_classifier(self.model_path).score(texts, self.positive).astype(np.float32)

    def decide(self, shards: Sequence[np.ndarray]) -> list[tuple[np.ndarray, float]]:
        cut = self.threshold
        if self.keep_top_fraction is not None:
            scores = np.concatenate(list(shards))
            cut = float(np.quantile(scores, 1.0 - self.keep_top_fraction)) if len(scores) else 0.0
        return [(scores, cut) for scores in shards]

    def process(self, docs: Iterator[Document], ctx: StageContext) -> Iterator[Document]:
        scores, cut = self.decision
        for doc, score in zip(docs, scores, strict=True):
            doc.metadata[self.score_key] = round(float(score), 4)
            if score >= cut:
                yield doc
            else:
                ctx.drop(doc, "low_quality_score")
