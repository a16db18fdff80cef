"""herd.eval metrics against definitions computed independently (brute-force combinatorics, hand-worked cases)."""

import itertools
import math

import pytest

from herd.eval.drop_f1 import drop_metrics
from herd.eval.math_answer import extract_final_answer, is_equiv, normalize_final_answer
from herd.eval.metrics import (
    GSM8K_ANSWER_PATTERNS, exact_match, extract_answer, macro_mean, majority_vote, multiple_choice, normalize_number,
    pass_at_k,
)


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 5), (5, 0, 2), (5, 5, 3), (7, 2, 7), (12, 4, 3)])
def test_pass_at_k_is_probability_some_of_k_draws_passes(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(outcomes, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_multiple_choice_acc_norm_divides_by_characters():
    # raw: choice 0 wins; per character: the long choice 1 wins (-6/12 > -4/2)
    scores = multiple_choice([-4.0, -6.0], ["ab", "abcdefghijkl"], gold=1)
    assert scores == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0}
    # bytes differ from characters for non-ASCII text
    # per character -1.5 vs -1 (choice 1); per byte -0.75 vs -1 (choice 0)
    assert multiple_choice([-4.5, -4.0], ["ééé", "abcd"], gold=1) == {"acc": 1.0, "acc_norm": 1.0, "acc_bytes": 0.0}


def test_gsm8k_extraction_and_match():
    assert extract_answer("so 5 * 4 = 20. The answer is 1,200.", GSM8K_ANSWER_PATTERNS) == "1,200."
    assert extract_answer("work\n#### 72", GSM8K_ANSWER_PATTERNS) == "72"
    assert extract_answer("I think 3 then 7", GSM8K_ANSWER_PATTERNS) is None
    assert extract_answer("I think 3 then $7.", GSM8K_ANSWER_PATTERNS, fallback_last_number=True) == "$7"
    assert exact_match("1,200.", "1200", normalize_number) == 1.0
    assert exact_match("$18.00", "18", normalize_number) == 1.0
    assert exact_match(None, "18", normalize_number) == 0.0


def test_majority_vote_and_macro_mean():
    assert majority_vote(["3", None, "4", "4", "3", "4"]) == "4"
    assert majority_vote([None, None]) is None
    assert macro_mean([1, 1, 1, 0], ["a", "a", "a", "b"]) == 0.5


@pytest.mark.parametrize(
    "prediction,golds,em,f1",
    [
        ("the Dogs.", [["dogs"]], 1.0, 1.0),
        ("3", [["three"]], 0.0, 0.0),  # numbers are not words
        ("3.0 yards", [["3 yards"]], 1.0, 1.0),  # numbers compared as floats
        ("4 yards", [["3 yards"]], 0.0, 0.0),  # a gold number must be matched for any credit
        ("John Smith", [["Smith"]], 0.0, 0.67),
        (["Bob", "Alice"], [["alice", "bob"]], 1.0, 1.0),  # spans aligned, order free
        (["Bob"], [["alice", "bob"]], 0.0, 0.5),
        ("touchdown", [["field goal"], ["touchdown"]], 1.0, 1.0),  # best over gold answers
    ],
)
def test_drop_f1(prediction, golds, em, f1):
    assert drop_metrics(prediction, golds) == {"em": em, "f1": f1}


def test_math_answer_normalisation_and_equivalence():
    assert extract_final_answer("so $x=2$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.") \
        == "$\\frac{1}{2}$"
    assert extract_final_answer("thus \\boxed{\\frac{3}{4}} done") == "\\frac{3}{4}"
    assert normalize_final_answer("10\\text{ inches}") == "10"
    assert normalize_final_answer("\\$1,000") == "1000"
    assert is_equiv("\\frac{1}{2}", "0.5")
    assert is_equiv("\\dfrac12", "\\frac{1}{2}")
    assert is_equiv("2\\sqrt{2}", "\\sqrt{8}")
    assert not is_equiv("3", "4")
    assert not is_equiv("__import__('os').system('true')", "0")  # never evaluated
    assert not is_equiv(None, "1")
    assert math.isclose(float(normalize_final_answer("0.50")), 0.5)
