"""Language identification: fastText `lid.176` when the user gives its path, else a script + stop-word heuristic.

The fallback labels Latin-script text by stop words (en fr de es it pt nl) and other scripts by their main language.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from herd.data.document import Document
from herd.data.stage import DocumentStage
from herd.errors import HerdError

STOP_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "and",
            "of",
            "to",
            "is",
            "in",
            "that",
            "it",
            "was",
            "for",
            "with",
            "as",
            "on",
            "are",
            "be",
            "this",
            "have",
            "not",
            "you",
            "at",
            "by",
            "a",
            "an",
            "he",
            "she",
            "his",
            "her",
            "they",
            "we",
            "how",
            "many",
            "what",
            "does",
            "has",
            "there",
            "more",
            "than",
            "if",
            "each",
            "or",
            "were",
            "had",
            "do",
            "from",
            "which",
            "will",
            "would",
            "can",
            "all",
        ]
    ),
    "fr": frozenset(
        [
            "le",
            "la",
            "les",
            "et",
            "des",
            "est",
            "une",
            "un",
            "du",
            "que",
            "pour",
            "dans",
            "qui",
            "pas",
            "sur",
            "au",
            "avec",
            "ce",
            "sont",
        ]
    ),
    "de": frozenset(
        [
            "der",
            "die",
            "und",
            "das",
            "ist",
            "nicht",
            "ein",
            "eine",
            "zu",
            "den",
            "von",
            "mit",
            "sich",
            "des",
            "auf",
            "für",
            "im",
            "dem",
        ]
    ),
    "es": frozenset(
        [
            "el",
            "los",
            "las",
            "y",
            "que",
            "del",
            "se",
            "una",
            "por",
            "con",
            "para",
            "es",
            "su",
            "al",
            "lo",
            "como",
            "más",
            "pero",
        ]
    ),
    "it": frozenset(
        [
            "il",
            "di",
            "che",
            "è",
            "e",
            "la",
            "per",
            "un",
            "una",
            "sono",
            "non",
            "con",
            "del",
            "della",
            "gli",
            "le",
            "si",
            "da",
        ]
    ),
    "pt": frozenset(
        [
            "o",
            "os",
            "e",
            "que",
            "do",
            "da",
            "em",
            "um",
            "uma",
            "para",
            "com",
            "não",
            "se",
            "na",
            "no",
            "por",
            "mais",
            "dos",
            "as",
        ]
    ),
    "nl": frozenset(
        [
            "de",
            "het",
            "een",
            "en",
            "van",
            "is",
            "dat",
            "op",
            "te",
            "zijn",
            "niet",
            "met",
            "voor",
            "die",
            "er",
            "maar",
            "ook",
        ]
    ),
}
# Unicode-name prefix of a letter's script -> the language the fallback reports for that script.
SCRIPT_LANGUAGES = {
    "CYRILLIC": "ru",
    "GREEK": "el",
    "ARABIC": "ar",
    "HEBREW": "he",
    "CJK": "zh",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "HANGUL": "ko",
    "DEVANAGARI": "hi",
    "THAI": "th",
    "BENGALI": "bn",
    "TAMIL": "ta",
}
_WORD = re.compile(r"\w+")
# Only words on a single language's list count as evidence (e.g. "de", "en", "as" are on several).
EXCLUSIVE_STOP_WORDS = {
    lang: words - frozenset().union(*(other for o, other in STOP_WORDS.items() if o != lang))
    for lang, words in STOP_WORDS.items()
}


@dataclass
class LanguageFilter(DocumentStage):
    """Tag `metadata.language` / `metadata.language_score`; drop documents not in `languages` or below `min_score`."""

    name: ClassVar[str] = "language"
    languages: list[str] = field(default_factory=lambda: ["en"])
    """ISO 639-1 codes to keep; empty keeps every language (tag only)."""
    min_score: float = 0.65
    """Least confidence of the predicted language (fastText probability, or the fallback's share)."""
    model_path: str | None = None
    """fastText lid.176.bin / .ftz; None uses the script + stop-word fallback."""

    def setup(self) -> None:
        if self.model_path is not None:
            _fasttext_model(self.model_path)

    def apply(self, doc: Document) -> str | None:
        if self.model_path is not None:
            language, score = fasttext_language(doc.text, self.model_path)
        else:
            language, score = heuristic_language(doc.text)
        doc.metadata["language"] = language
        doc.metadata["language_score"] = round(score, 4)
        if self.languages and language not in self.languages:
            return "language_other"
        if score < self.min_score:
            return "language_low_score"
        return None


def heuristic_language(text: str, sample_chars: int = 5000) -> tuple[str, float]:
    """(language, confidence) from the dominant script, then stop words for Latin script; ("unknown", 0) if unsure."""
    sample = text[:sample_chars]
    scripts = Counter(_script(ch) for ch in sample if ch.isalpha())
    if not scripts:
        return "unknown", 0.0
    script, count = scripts.most_common(1)[0]
    share = count / sum(scripts.values())
    if script != "LATIN":
        if script == "CJK" and scripts["HIRAGANA"] + scripts["KATAKANA"] > 0.05 * count:
            return "ja", share
        return SCRIPT_LANGUAGES.get(script, "unknown"), share
    words = _WORD.findall(sample.lower())
    hits = {lang: sum(w in stops for w in words) for lang, stops in EXCLUSIVE_STOP_WORDS.items()}
    best = max(hits, key=hits.__getitem__)
    total = sum(hits.values())
    if hits[best] < 2:
        return "unknown", 0.0
    return best, share * hits[best] / total


def fasttext_language(text: str, model_path: str) -> tuple[str, float]:
    """(language, probability) from fastText's top label."""
    labels, scores = _fasttext_model(model_path).predict(" ".join(text.split()), k=1)
    return labels[0].removeprefix("__label__"), float(scores[0])


@lru_cache(maxsize=2)
def _fasttext_model(model_path: str) -> Any:
    try:
        import fasttext
    except ImportError:
        raise ImportError("language.model_path needs the fasttext package: pip install fasttext-wheel") from None
    if not Path(model_path).is_file():
        raise HerdError(
            f"language.model_path {model_path} not found; download lid.176.bin or unset it for the fallback"
        )
    return fasttext.load_model(model_path)


@lru_cache(maxsize=4096)
def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "OTHER"
