"""Text normalisation: Unicode normal form, newline and whitespace clean-up, control characters removed.

A document left empty is dropped with reason `empty_after_normalize`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import ClassVar, Literal

from herd.data.document import Document
from herd.data.stage import DocumentStage

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")  # runs of whitespace other than newlines
_TRAILING = re.compile(r"[^\S\n]+\n")


@dataclass
class Normalize(DocumentStage):
    """Unicode and whitespace normalisation."""

    name: ClassVar[str] = "normalize"
    form: Literal["NFC", "NFKC", "NFD", "NFKD", "none"] = "NFC"
    """Unicode normal form (NFKC also folds compatibility characters such as full-width letters)."""
    collapse_spaces: bool = True
    """Turn runs of spaces/tabs (and other non-newline whitespace) into one space; trim line ends."""
    max_blank_lines: int = 2
    """Runs of more blank lines are cut to this many (-1 keeps them)."""
    strip: bool = True
    """Remove leading and trailing whitespace of the document."""

    def apply(self, doc: Document) -> str | None:
        text = doc.text.replace("\r\n", "\n").replace("\r", "\n")
        if self.form != "none":
            text = unicodedata.normalize(self.form, text)
        text = _CONTROL.sub("", text)
        if self.collapse_spaces:
            text = _TRAILING.sub("\n", _SPACES.sub(" ", text))
        if self.max_blank_lines >= 0:
            text = re.sub(rf"\n{{{self.max_blank_lines + 2},}}", "\n" * (self.max_blank_lines + 1), text)
        if self.strip:
            text = text.strip()
        if not text:
            return "empty_after_normalize"
        if text != doc.text:
            doc.text = text
        return None
