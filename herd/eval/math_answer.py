"""MATH answers: the final answer of a Minerva-style solution, Minerva's normalisation of it
(Lewkowycz et al. 2022, appendix D.1), and equivalence by string or by sympy on a small LaTeX subset.

A hand-written LaTeX-to-sympy step because sympy's own `parse_latex` needs antlr4 at one pinned version.
"""

from __future__ import annotations

import re

# Minerva's normalisation tables (data from the paper's appendix).
_SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)
_REMOVED = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges",
    "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2",
    "\\text{}^3", "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"',
    "\\dots",
)
_SAFE = re.compile(r"[0-9A-Za-z+\-*/(). ]+")


def last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1 : i]
    return None


def extract_final_answer(solution: str) -> str | None:
    """Minerva's "Final Answer: The final answer is X. I hope it is correct.", else the last \\boxed{}."""
    found = re.search(r"Final Answer: The final answer is(.*?)\. I hope it is correct\.", solution, re.DOTALL)
    if found:
        return found.group(1).strip()
    return last_boxed(solution)


def normalize_final_answer(answer: str) -> str:
    """Minerva's normalisation: drop units and text wrappers, keep the math, canonical fractions and roots."""
    answer = answer.split("=")[-1]
    for before, after in _SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expression in _REMOVED:
        answer = answer.replace(expression, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


def is_equiv(prediction: str | None, reference: str) -> bool:
    """Equal after normalisation, or both parse to sympy expressions whose difference simplifies to 0."""
    if prediction is None:
        return False
    a, b = normalize_final_answer(prediction), normalize_final_answer(reference)
    if a == b:
        return True
    left, right = _to_sympy(a), _to_sympy(b)
    if left is None or right is None:
        return False
    try:
        import sympy

        return bool(sympy.simplify(left - right) == 0)
    except Exception:  # noqa: BLE001 - sympy raises many types on odd inputs; unequal then
        return False


def _to_sympy(latex: str):  # noqa: ANN202 - a sympy expression or None
    """A sympy expression for simple LaTeX (numbers, + - * /, ^, \\frac, \\sqrt, \\pi, letters), else None."""
    try:
        from sympy.parsing.sympy_parser import (
            implicit_multiplication_application,
            parse_expr,
            standard_transformations,
        )
    except ImportError as error:
        raise ImportError("MATH answer equivalence needs sympy: pip install sympy") from error
    text = latex.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    text = text.replace("dfrac", "frac").replace("tfrac", "frac")
    for _ in range(5):  # nested fractions and roots, innermost first
        text = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", text)
        text = re.sub(r"\\sqrt\[([^{}]*)\]\{([^{}]*)\}", r"((\2)**(1/(\1)))", text)
        text = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", text)
    text = text.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("^", "**")
    text = text.replace("{", "(").replace("}", ")")
    if "\\" in text or not text.strip() or not _SAFE.fullmatch(text):
        return None
    if any(len(word) > 1 and word not in ("sqrt", "pi") for word in re.findall(r"[A-Za-z]+", text)):
        return None  # parse_expr evaluates Python: only single-letter symbols and two known names pass
    try:
        return parse_expr(text, transformations=standard_transformations + (implicit_multiplication_application,))
    except Exception:  # noqa: BLE001 - anything unparsable is "not an expression"
        return None
