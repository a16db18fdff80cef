"""DROP's answer F1 and exact match, with the official evaluation's semantics: answers are bags of
normalised spans, numbers must agree when the gold has any, and spans are aligned one-to-one (Hungarian).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def drop_metrics(prediction: str | Sequence[str], golds: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """{"em", "f1"}: the best over the gold answers (each a span or a list of spans) for the predicted one."""
    scores = [_em_f1(prediction, gold) for gold in golds]
    return {"em": max(em for em, _ in scores), "f1": max(f1 for _, f1 in scores)}


def _em_f1(prediction: str | Sequence[str], gold: str | Sequence[str]) -> tuple[float, float]:
    pred_spans, pred_bags = _bags(prediction)
    gold_spans, gold_bags = _bags(gold)
    em = float(sorted(set(pred_spans)) == sorted(set(gold_spans)) and len(pred_spans) == len(gold_spans))
    scores = np.zeros((len(gold_bags), len(pred_bags)))
    for g, gold_bag in enumerate(gold_bags):
        for p, pred_bag in enumerate(pred_bags):
            if _numbers_agree(gold_bag, pred_bag):
                scores[g, p] = _f1(pred_bag, gold_bag)
    rows, cols = linear_sum_assignment(-scores)
    best = np.zeros(max(len(gold_bags), len(pred_bags)))
    for row, col in zip(rows, cols, strict=True):
        best[row] = max(best[row], scores[row, col])
    return em, round(float(best.mean()), 2)


def _bags(answer: str | Sequence[str]) -> tuple[list[str], list[set[str]]]:
    spans = [_normalize(span) for span in ([answer] if isinstance(answer, str) else answer)]
    return spans, [set(span.split()) for span in spans]


def _normalize(text: str) -> str:
    """Lowercase; per space/hyphen token: strip punctuation (not from numbers), canonical numbers, no articles."""
    words = []
    for token in re.split(" |-", text):
        token = token.lower()
        if not _is_number(token):
            token = "".join(ch for ch in token if ch not in _PUNCTUATION)
        if _is_number(token):
            token = str(float(token))
        token = " ".join(_ARTICLES.sub(" ", token).split())
        if token.strip():
            words.append(token)
    return " ".join(words).strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numbers_agree(gold_bag: set[str], pred_bag: set[str]) -> bool:
    gold_numbers = {w for w in gold_bag if _is_number(w)}
    return not gold_numbers or bool(gold_numbers & {w for w in pred_bag if _is_number(w)})


def _f1(pred_bag: set[str], gold_bag: set[str]) -> float:
    common = len(pred_bag & gold_bag)
    precision = common / len(pred_bag) if pred_bag else 1.0
    recall = common / len(gold_bag) if gold_bag else 1.0
    return 0.0 if precision == recall == 0.0 else 2 * precision * recall / (precision + recall)
