"""Scoring functions: multiple-choice accuracy (acc, acc_norm), answer extraction and exact match,
unbiased pass@k, majority vote, and aggregation (micro / macro means with bootstrap standard errors).
"""

from __future__ import annotations

import math
import random
import re
import statistics
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence

GSM8K_ANSWER_PATTERNS = (r"#### (\-?[0-9\.\,]+)", r"The answer is \$?(\-?[0-9\.\,]+)")
"""The reference's "#### N" and the CoT exemplars' "The answer is N", tried in order."""
FINAL_ANSWER_PATTERNS = (*GSM8K_ANSWER_PATTERNS, r"\\boxed\{\$?(\-?[0-9\.\,]+)\}")
"""The final-answer forms the evals read: GSM8K's two, then MATH's "\\boxed{N}"."""


def multiple_choice(logprobs: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, float]:
    """acc: the most likely choice is gold; acc_norm: the same after dividing each loglikelihood by its
    choice's length in characters (lm-eval's acc_norm); acc_bytes: by its length in UTF-8 bytes."""
    def best(scores: Iterable[float]) -> int:
        scores = list(scores)
        return max(range(len(scores)), key=scores.__getitem__)

    return {
        "acc": float(best(logprobs) == gold),
        "acc_norm": float(best(lp / max(len(c), 1) for lp, c in zip(logprobs, choices, strict=True)) == gold),
        "acc_bytes": float(best(lp / max(len(c.encode()), 1) for lp, c in zip(logprobs, choices, strict=True)) == gold),
    }


def extract_answer(text: str, patterns: Sequence[str], *, fallback_last_number: bool = False) -> str | None:
    """The first group of the first pattern that matches `text` (its first match), or with
    `fallback_last_number` the last number in the text; None when nothing is found."""
    for pattern in patterns:
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    if fallback_last_number:
        numbers = re.findall(r"-?[$0-9.,]*[0-9]", text)
        if numbers:
            return numbers[-1]
    return None


def final_answer(text: str, *, fallback_last_number: bool = True) -> str | None:
    """The final numeric answer of a worked reply: the first of FINAL_ANSWER_PATTERNS to match, else (with
    `fallback_last_number`) the last number. The one reading of GSM8K's and the speedrun's scorers and of RL's
    verifiable rewards, so a reward credits exactly what the evals count as right."""
    return extract_answer(text, FINAL_ANSWER_PATTERNS, fallback_last_number=fallback_last_number)


def normalize_number(text: str) -> str:
    """A numeric answer without thousands separators, dollar signs, trailing dot or trailing zeros."""
    text = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else str(value)


def exact_match(prediction: str | None, reference: str, normalize: Callable[[str], str] = str.strip) -> float:
    """1.0 when the normalised prediction equals the normalised reference (a missing prediction is wrong)."""
    return float(prediction is not None and normalize(prediction) == normalize(reference))


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - correct + 1, n + 1))


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
    """maj@k: the most common non-missing answer (ties go to the one seen first), None if all are missing."""
    counts = Counter(a for a in answers if a is not None)
    return max(counts, key=counts.__getitem__) if counts else None


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def macro_mean(values: Sequence[float], groups: Sequence[str]) -> float:
    """The mean over groups of each group's mean (MMLU's macro average over subjects)."""
    by_group: dict[str, list[float]] = {}
    for value, group in zip(values, groups, strict=True):
        by_group.setdefault(group, []).append(value)
    return mean([mean(v) for v in by_group.values()])


def stderr_of_mean(values: Sequence[float]) -> float:
    """Sample standard deviation over sqrt(n), as lm-eval reports for means."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def bootstrap_stderr(
    statistic: Callable[[list[int]], float], n: int, *, iters: int = 200, seed: int = 0
) -> float:
    """Standard deviation of `statistic(indices)` over `iters` resamples of range(n) with replacement."""
    if n < 2:
        return float("nan")
    rng = random.Random(seed)
    stats = [statistic(rng.choices(range(n), k=n)) for _ in range(iters)]
    return statistics.stdev(stats)
