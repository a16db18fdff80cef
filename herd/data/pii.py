"""PII masking: e-mail addresses, IP addresses (v4 and v6) and phone numbers replaced by placeholders.

Regular expressions, as FineWeb and datatrove use: no library masks these three without a heavy NLP stack.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar

from herd.data.document import Document
from herd.data.stage import DocumentStage

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]*\d)"
)
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")  # candidates, then validated
# International (+CC ...) or North-American style numbers with separators; bare digit runs are left alone.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?!\w)"
)


@dataclass
class PIIMask(DocumentStage):
    """Replace e-mail addresses, IP addresses and phone numbers; never drops a document."""

    name: ClassVar[str] = "pii_mask"
    emails: bool = True
    ips: bool = True
    phones: bool = True
    email_replacement: str = "<EMAIL>"
    ip_replacement: str = "<IP>"
    phone_replacement: str = "<PHONE>"

    def apply(self, doc: Document) -> str | None:
        text = doc.text
        if self.emails and "@" in text:
            text = EMAIL.sub(self.email_replacement, text)
        if self.ips:
            text = IPV4.sub(self.ip_replacement, text)
            if "::" in text or text.count(":") >= 2:
                text = IPV6.sub(lambda m: self.ip_replacement if _is_ipv6(m.group()) else m.group(), text)
        if self.phones:
            text = PHONE.sub(self.phone_replacement, text)
        if text != doc.text:
            doc.text = text
        return None


def _is_ipv6(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True
