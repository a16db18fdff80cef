"""Heuristic quality filters with the published thresholds: Gopher quality and repetition, C4 and FineWeb rules.

Written here, not imported: datatrove has them but pulls in nltk/spaCy word splitting; these use whitespace words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from herd.data.document import Document
from herd.data.stage import DocumentStage

PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡§«¶·»¿‐‑‒–—―‘’‚“”„†‡•…‰′″‹›"
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’", "。", "！", "？")
C4_END_PUNCTUATION = (".", "?", "!", '"')
C4_POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SYMBOL_WORD = re.compile(rf"(?<!\S)[{re.escape(PUNCTUATION)}]+(?!\S)")
_ALPHA_WORD = re.compile(r"\S*[^\W\d_]\S*")


@dataclass
class GopherQuality(DocumentStage):
    """Gopher's quality rules (Rae et al. 2021, MassiveText, appendix A); words are whitespace-separated."""

    name: ClassVar[str] = "gopher_quality"
    min_words: int = 50
    """Fewer non-symbol words: `gopher_short_doc`."""
    max_words: int = 100_000
    """More non-symbol words: `gopher_long_doc`."""
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    """Most '#' and most '...'/'…' per word."""
    max_bullet_lines_ratio: float = 0.9
    """Most lines starting with a bullet (•, -, *)."""
    max_ellipsis_lines_ratio: float = 0.3
    """Most lines ending with an ellipsis."""
    min_alpha_words_ratio: float = 0.8
    """Least share of words holding an alphabetic character."""
    min_stop_words: int = 2
    """Least number of distinct stop words present."""
    stop_words: list[str] = field(default_factory=lambda: list(GOPHER_STOP_WORDS))

    def apply(self, doc: Document) -> str | None:
        text = doc.text
        words = text.split()
        symbols = _SYMBOL_WORD.findall(text)
        n_content = len(words) - len(symbols)
        if n_content < self.min_words:
            return "gopher_short_doc"
        if n_content > self.max_words:
            return "gopher_long_doc"
        mean_length = (sum(map(len, words)) - sum(map(len, symbols))) / n_content
        if mean_length < self.min_mean_word_length:
            return "gopher_short_words"
        if mean_length > self.max_mean_word_length:
            return "gopher_long_words"
        if text.count("#") / len(words) > self.max_symbol_word_ratio:
            return "gopher_hash_ratio"
        if (text.count("...") + text.count("…")) / len(words) > self.max_symbol_word_ratio:
            return "gopher_ellipsis_ratio"
        lines = text.splitlines()
        if sum(line.lstrip().startswith(("•", "-", "*")) for line in lines) / len(lines) > self.max_bullet_lines_ratio:
            return "gopher_bullet_lines"
        if sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines) > self.max_ellipsis_lines_ratio:
            return "gopher_ellipsis_lines"
        if len(_ALPHA_WORD.findall(text)) / len(words) < self.min_alpha_words_ratio:
            return "gopher_alpha_words"
        lowered = {w.strip(PUNCTUATION) for w in set(text.lower().split())}
        if len(lowered.intersection(self.stop_words)) < self.min_stop_words:
            return "gopher_stop_words"
        return None


@dataclass
class GopherRepetition(DocumentStage):
    """Gopher's repetition rules (Rae et al. 2021, table A1): duplicate lines/paragraphs and n-gram coverage.

    Character fractions count word characters (no spaces); the duplicated n-gram fraction is the share of word
    characters covered by any n-gram that occurs more than once (overlaps counted once).
    """

    name: ClassVar[str] = "gopher_repetition"
    max_dup_line_frac: float = 0.30
    max_dup_para_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    max_dup_para_char_frac: float = 0.20
    top_ngram_max_frac: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    """n -> most characters that the most frequent n-gram may cover."""
    dup_ngram_max_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    """n -> most characters that duplicated n-grams may cover."""

    def apply(self, doc: Document) -> str | None:
        text = doc.text
        n_chars = len(text)
        paragraphs = _PARAGRAPH_BREAK.split(text.strip())
        dup, dup_chars = duplicates(paragraphs)
        if dup / len(paragraphs) > self.max_dup_para_frac:
            return "gopher_dup_para_frac"
        if dup_chars / n_chars > self.max_dup_para_char_frac:
            return "gopher_dup_para_char_frac"
        lines = _LINE_BREAK.split(text.strip())
        dup, dup_chars = duplicates(lines)
        if dup / len(lines) > self.max_dup_line_frac:
            return "gopher_dup_line_frac"
        if dup_chars / n_chars > self.max_dup_line_char_frac:
            return "gopher_dup_line_char_frac"
        words = text.split()
        if not words:
            return None
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        total = int(lengths.sum())
        hashes = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
        ngram = hashes.copy()
        for n in range(2, max([1, *self.top_ngram_max_frac, *self.dup_ngram_max_frac]) + 1):
            if len(words) < n:
                break
            ngram = ngram[:-1] * _MIX + hashes[n - 1 :]  # hash of words[i : i + n] at position i
            if (
                n in self.top_ngram_max_frac
                and _top_ngram_chars(ngram, lengths, n) / total > self.top_ngram_max_frac[n]
            ):
                return f"gopher_top_{n}gram"
            if (
                n in self.dup_ngram_max_frac
                and _dup_ngram_chars(ngram, lengths, n) / total > self.dup_ngram_max_frac[n]
            ):
                return f"gopher_dup_{n}gram"
        return None


def duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def _top_ngram_chars(ngram: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Word characters of the most frequent n-gram times its count (0 if none repeats)."""
    _, first, counts = np.unique(ngram, return_index=True, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] < 2:
        return 0
    return int(counts[top]) * int(lengths[first[top] : first[top] + n].sum())


def _dup_ngram_chars(ngram: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Word characters covered by n-grams occurring more than once."""
    _, inverse, counts = np.unique(ngram, return_inverse=True, return_counts=True)
    starts = np.flatnonzero(counts[inverse] > 1)
    if not len(starts):
        return 0
    cover = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.add.at(cover, starts, 1)
    np.add.at(cover, starts + n, -1)
    return int(lengths[np.cumsum(cover[:-1]) > 0].sum())


@dataclass
class C4Quality(DocumentStage):
    """C4's rules (Raffel et al. 2020, section 2.2 and the TFDS c4_utils code); removes lines, may drop the page.

    Lines kept: end in terminal punctuation (not an ellipsis), >= `min_words_per_line` words, no word longer
    than `max_word_length`, no "javascript", no cookie/terms-of-use phrase. Pages dropped: "lorem ipsum", a
    curly bracket, or fewer than `min_sentences` sentences left.
    """

    name: ClassVar[str] = "c4_quality"
    min_words_per_line: int = 3
    max_word_length: int = 1000
    min_sentences: int = 5
    remove_citations: bool = True
    drop_curly_bracket: bool = True
    drop_lorem_ipsum: bool = True

    def apply(self, doc: Document) -> str | None:
        kept: list[str] = []
        sentences = 0
        for line in doc.text.splitlines():
            line = line.strip()
            words = line.split()
            if any(len(w) > self.max_word_length for w in words):
                continue
            if self.remove_citations:
                line = _CITATION.sub("", line)
            if not line.endswith(C4_END_PUNCTUATION) or line.endswith("..."):
                continue
            if len(words) < self.min_words_per_line:
                continue
            lowered = line.lower()
            if self.drop_lorem_ipsum and "lorem ipsum" in lowered:
                return "c4_lorem_ipsum"
            if self.drop_curly_bracket and "{" in line:
                return "c4_curly_bracket"
            if "javascript" in lowered or any(p in lowered for p in C4_POLICY_PHRASES):
                continue
            sentences += max(1, len(_SENTENCE_END.findall(line)))
            kept.append(line)
        if sentences < self.min_sentences:
            return "c4_too_few_sentences"
        text = "\n".join(kept)
        if text != doc.text:
            doc.text = text
        return None


@dataclass
class FineWebQuality(DocumentStage):
    """FineWeb's extra rules (Penedo et al. 2024): punctuated lines, short lines, duplicated lines, list-likeness."""

    name: ClassVar[str] = "fineweb_quality"
    min_punct_line_ratio: float = 0.12
    """Least share of non-empty lines ending in terminal punctuation: `fineweb_line_punct_ratio`."""
    max_short_line_ratio: float = 0.67
    """Most share of lines of at most `short_line_chars` characters: `fineweb_short_line_ratio`."""
    short_line_chars: int = 30
    max_dup_line_char_ratio: float = 0.01
    """Most characters in duplicated lines per character (newlines excluded): `fineweb_char_dup_ratio`."""
    max_newline_word_ratio: float = 0.3
    """Most newlines per word: `fineweb_list_ratio`."""

    def apply(self, doc: Document) -> str | None:
        text = doc.text
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return "fineweb_empty"
        if sum(line.endswith(TERMINAL_PUNCTUATION) for line in lines) / len(lines) < self.min_punct_line_ratio:
            return "fineweb_line_punct_ratio"
        if sum(len(line) <= self.short_line_chars for line in lines) / len(lines) > self.max_short_line_ratio:
            return "fineweb_short_line_ratio"
        if duplicates(lines)[1] / max(1, len(text) - text.count("\n")) > self.max_dup_line_char_ratio:
            return "fineweb_char_dup_ratio"
        if text.count("\n") / max(1, len(text.split())) > self.max_newline_word_ratio:
            return "fineweb_list_ratio"
        return None
