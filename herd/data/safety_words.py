"""NSFW "dirty word" filter: drops documents with too many matches from configurable word lists.

Default list: a short English list of explicit terms; pass `word_files` (one word or phrase a line, e.g. LDNOOBW).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from herd.data.document import Document
from herd.data.stage import DocumentStage
from herd.errors import HerdError

DEFAULT_WORDS = (
    "porn",
    "porno",
    "pornography",
    "xxx",
    "hardcore sex",
    "blowjob",
    "cumshot",
    "gangbang",
    "handjob",
    "milf",
    "hentai",
    "camgirl",
    "nude pics",
    "orgasm",
    "pussy",
    "dildo",
    "fisting",
    "bdsm",
    "escort service",
)


@dataclass
class BadWordsFilter(DocumentStage):
    """Drop a document when it holds more than `max_matches` occurrences of listed words (whole words, any case)."""

    name: ClassVar[str] = "bad_words"
    words: list[str] = field(default_factory=lambda: list(DEFAULT_WORDS))
    """Words or phrases to match (case-insensitive, on word boundaries)."""
    word_files: list[str] = field(default_factory=list)
    """Files with one word or phrase per line, added to `words` (blank lines and # comments skipped)."""
    max_matches: int = 0
    """Most matches a kept document may hold (0: any match drops it, as C4 does)."""

    def setup(self) -> None:
        if getattr(self, "_pattern", None) is not None:
            return
        words = {w.strip().lower() for w in self.words if w.strip()}
        for name in self.word_files:
            path = Path(name)
            if not path.is_file():
                raise HerdError(f"bad_words.word_files: {path} not found; give files with one word per line")
            lines = path.read_text(encoding="utf-8").splitlines()
            words.update(w.strip().lower() for w in lines if w.strip() and not w.startswith("#"))
        if not words:
            raise HerdError("bad_words has an empty word list; set bad_words.words or bad_words.word_files")
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def apply(self, doc: Document) -> str | None:
        self.setup()
        for matches, _ in enumerate(self._pattern.finditer(doc.text), start=1):
            if matches > self.max_matches:
                return "bad_words"
        return None
