"""Code Shield: scan generated code for insecure patterns; each finding with rule, CWE, severity and line, and a
verdict BLOCK (an error-severity finding) / WARN (any other) / IGNORE (none).

Meta's `codeshield` package does the scanning: its regex rules, then its semgrep rules only when a prescan regex
flags the code. herd adds two things it lacks: rules for languages and calls it does not cover
(rules/herd_regex.yaml), and a workaround: codeshield passes semgrep `--project-root /` for an absolute path,
with which semgrep >= 1.1xx scans nothing, so herd hands it a relative path. Without the package only herd's rules
run, and each result says so (`scanners`, `note`). A scanner failure raises; it is never read as clean
(codeshield's own `scan_code` returns IGNORE on errors).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml

from herd.errors import HerdError

LANGUAGES = {".py": "python", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".java": "java",
             ".js": "javascript", ".mjs": "javascript", ".ts": "javascript", ".php": "php", ".rs": "rust",
             ".cs": "csharp", ".rb": "ruby", ".swift": "swift", ".kt": "kotlin"}
"""File extensions and the language each is scanned as."""
SEVERITIES = ("error", "warning", "advice")
ONLY_HERD_RULES = ("only herd's regex rules ran: Meta's codeshield package (its regex and semgrep rules) is not "
                   "installed; pip install 'herd[safety]'")
Treatment = Literal["BLOCK", "WARN", "IGNORE"]


@dataclass(frozen=True)
class Finding:
    """One insecure pattern found."""

    rule: str
    cwe: str
    severity: str
    """error, warning or advice."""
    line: int
    message: str
    source: str
    """Which layer found it: codeshield-regex, codeshield-semgrep or herd-regex."""


@dataclass
class ScanResult:
    verdict: Treatment
    findings: list[Finding]
    scanners: list[str]
    """The layers that ran: codeshield (its regex rules, semgrep where they flag) and herd-regex."""

    @property
    def note(self) -> str | None:
        """Says when only herd's own rules ran (no codeshield package)."""
        return None if "codeshield" in self.scanners else ONLY_HERD_RULES

    def to_dict(self) -> dict:
        result = {"verdict": self.verdict, "findings": [asdict(f) for f in self.findings], "scanners": self.scanners}
        return result | ({"note": self.note} if self.note else {})


def language_of(path: str | Path) -> str:
    """The language a file is scanned as, from its extension."""
    language = LANGUAGES.get(Path(path).suffix.lower())
    if language is None:
        raise HerdError(f"cannot tell the language of {path}; pass language= one of {sorted(set(LANGUAGES.values()))}")
    return language


def scan(code: str, language: str) -> ScanResult:
    """Scan `code` written in `language` (python, c, cpp, java, javascript, php, rust, ...)."""
    if language not in set(LANGUAGES.values()):
        raise HerdError(f"unknown language {language!r}; use one of {sorted(set(LANGUAGES.values()))}")
    meta = _codeshield(code, language)
    scanners = ["herd-regex"] if meta is None else ["codeshield", "herd-regex"]
    meta = meta or []
    seen = {(f.cwe, f.line) for f in meta}
    findings = meta + [f for f in _herd_regex(code, language) if (f.cwe, f.line) not in seen]
    findings.sort(key=lambda f: (f.line, f.rule))
    verdict: Treatment = ("BLOCK" if any(f.severity == "error" for f in findings) else
                          "WARN" if findings else "IGNORE")
    return ScanResult(verdict, findings, scanners)


def scan_file(path: str, language: str | None = None) -> dict:
    """`herd codeshield FILE|-`: scan a file (or stdin for "-", which needs `language`); the result as a dict."""
    if path == "-":
        import sys

        if language is None:
            raise HerdError("reading code from stdin needs --language (python, c, cpp, java, javascript, php, rust, ...)")
        return scan(sys.stdin.read(), language).to_dict()
    file = Path(path)
    if not file.is_file():
        raise HerdError(f"file not found: {path}")
    return scan(file.read_text(encoding="utf-8", errors="replace"), language or language_of(file)).to_dict()


@cache
def _rules() -> list[dict]:
    return yaml.safe_load((Path(__file__).parent / "rules" / "herd_regex.yaml").read_text())


def _herd_regex(code: str, language: str) -> list[Finding]:
    findings = []
    for rule in _rules():
        if language not in rule["languages"]:
            continue
        for match in re.finditer(rule["pattern"], code):
            line = code.count("\n", 0, match.start()) + 1
            findings.append(Finding(rule["id"], rule["cwe"], rule["severity"], line, rule["message"], "herd-regex"))
    return findings


def _codeshield(code: str, language: str) -> list[Finding] | None:
    """Meta's codeshield package's findings; None when the package is not installed."""
    try:
        from codeshield.insecure_code_detector import insecure_code_detector
        from codeshield.insecure_code_detector.languages import Language
        from codeshield.insecure_code_detector.usecases import UseCase
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / f"snippet{next(e for e, lang in LANGUAGES.items() if lang == language)}"
        file.write_text(code, encoding="utf-8")
        issues = asyncio.run(insecure_code_detector.analyze(
            Language(language), code, path=Path(os.path.relpath(file)), usecase=UseCase.CODESHIELD))
    return [
        Finding(
            rule=(issue.pattern_id or issue.rule or "").rsplit(".", 1)[-1],
            cwe=issue.cwe_id or "",
            severity=str(issue.severity).lower() if str(issue.severity).lower() in SEVERITIES else "warning",
            line=issue.line or 0,
            message=issue.description,
            source=f"codeshield-{issue.analyzer.value if issue.analyzer else 'semgrep'}",
        )
        for issue in issues
    ]
