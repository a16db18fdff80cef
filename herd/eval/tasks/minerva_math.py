"""MATH, 4-shot chain of thought with the Minerva prompt (Lewkowycz et al. 2022), answers normalised and
compared with sympy: DATA_DIR/math/ holding the test split (hendrycks MATH's test/*/*.json, or a
test.jsonl / test-*.parquet with problem and solution, as EleutherAI/hendrycks_math or MATH-500).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from herd.eval.data import find_split, read_records
from herd.eval.math_answer import extract_final_answer, is_equiv, last_boxed
from herd.eval.task import Sample, Task

# Minerva's four exemplars (appendix D.2): problem, solution, final answer.
EXEMPLARS = (
    ("Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}",
     "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and "
     "$5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. "
     "Therefore, the domain of the expression is $\\boxed{[2,5)}$.", "[2,5)"),
    ("If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
     "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = "
     "\\boxed{24}.$", "24"),
    ("Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many times "
     "must Terrell lift them in order to lift the same total weight?",
     "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of weight.  "
     "If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds "
     "of weight.  Equating this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n"
     "\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}", "16"),
    ("If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a solution $(x, y)$ "
     "where $x$ and $y$ are both nonzero, find $\\frac{a}{b},$ assuming $b$ is nonzero.",
     "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we also know "
     "that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$",
     "-\\frac{2}{3}"),
)


def math_sample(problem: str, solution: str, answer: str, group: str = "") -> Sample:
    target = f"{solution}\nFinal Answer: The final answer is ${answer}$. I hope it is correct."
    return Sample(f"Problem:\n{problem}\n\nSolution:", target, gold=answer, group=group)


class MATH(Task):
    name, kind, num_fewshot, metric = "math", "generate", 4, "exact_match"
    stop, max_gen_toks, chain_of_thought = ("Problem:",), 512, True

    def samples(self, data_dir: Path) -> list[Sample]:
        rows = read_records(find_split(data_dir / "math", "test", source="the MATH dataset (hendrycks/math)"))
        return [
            math_sample(r["problem"], r["solution"], r.get("answer") or last_boxed(r["solution"]) or "",
                        r.get("type") or r.get("subject") or "")
            for r in rows
        ]

    def fewshot_pool(self, data_dir: Path, group: str) -> list[Sample]:
        return [math_sample(*exemplar) for exemplar in EXEMPLARS]

    def score(self, sample: Sample, output: str) -> tuple[Any, dict[str, float]]:
        answer = extract_final_answer(output)
        return answer, {"exact_match": float(is_equiv(answer, sample.gold))}
