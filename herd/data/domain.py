"""Domain tagging for data mixing: `metadata.domain` is general, math, code or multilingual, from rules (code lines,
math notation, language) or from a classifier trained on those labels (`herd.data.classifier`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from herd.data.classifier import load_classifier
from herd.data.document import Document
from herd.data.langid import heuristic_language
from herd.data.stage import DocumentStage

DOMAINS = ("general", "math", "code", "multilingual")
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import|#include|return\b|if \(|for \(|while \(|function |public |private |"
    r"const |let |var |fn |package |using |\}|\{|@\w+)|[;{}]\s*$|^\s*(//|#!)|\w+\(.*\)\s*:?\s*$"
)
_LATEX = re.compile(r"\\(frac|sum|int|sqrt|cdot|times|leq|geq|alpha|beta|theta|pi|begin\{(equation|align))|\$[^$]+\$")
_EQUATION = re.compile(r"\d+(\.\d+)?\s*[-+*/^=<>]\s*\(?\s*\d|\b[a-z]\s*[=^]\s*[-\d(a-z]")
_MATH_WORDS = frozenset(
    [
        "theorem",
        "lemma",
        "proof",
        "equation",
        "integer",
        "prime",
        "solve",
        "sum",
        "product",
        "fraction",
        "derivative",
        "integral",
        "polynomial",
    ]
)


def rule_domain(text: str, language: str | None = None, languages: tuple[str, ...] = ("en",)) -> str:
    """The domain of `text` by rules: code when >= 30% of non-empty lines look like code; math when it holds LaTeX
    or equations or math words densely enough; multilingual when its language is not one of `languages`."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and sum(bool(_CODE_LINE.search(line)) for line in lines) >= 0.3 * len(lines):
        return "code"
    words = text.lower().split()
    math_hits = 3 * len(_LATEX.findall(text)) + 2 * len(_EQUATION.findall(text))
    math_hits += sum(w.strip(".,;:?!") in _MATH_WORDS for w in words)
    if words and math_hits >= max(2, 0.03 * len(words)):
        return "math"
    language = language or heuristic_language(text)[0]
    if language not in languages and language != "unknown":
        return "multilingual"
    return "general"


@dataclass
class DomainTagger(DocumentStage):
    """Write the document's domain (general / math / code / multilingual) to `metadata[key]`; drops nothing."""

    name: ClassVar[str] = "domain"
    model_path: str | None = None
    """A classifier trained on domain labels (`train_classifier`); None: the rules of `rule_domain`."""
    languages: list[str] = field(default_factory=lambda: ["en"])
    """Languages counted as `general`; others are `multilingual` (uses `metadata.language` when present)."""
    key: str = "domain"

    def apply(self, doc: Document) -> str | None:
        if self.model_path is not None:
            doc.metadata[self.key] = load_classifier(self.model_path).predict([doc.text])[0]
        else:
            doc.metadata[self.key] = rule_domain(doc.text, doc.metadata.get("language"), tuple(self.languages))
        return None
