"""Per-stage statistics: documents, tokens and bytes in and out, and drops per reason code.

Tasks write their own; `merge_stats` sums them in pipeline order and `render_report` writes the Markdown report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageStats:
    """Counts of one stage over some shards."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Reason code -> documents dropped for it."""
    modified: int = 0
    """Documents kept with their text changed (normalised, masked, lines removed)."""
    damaged: list[dict[str, Any]] = field(default_factory=list)
    """Input files that break off or are corrupt (`DamagedInput.summary()`), in input order; each is also one drop."""

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def add(self, other: StageStats) -> None:
        """Add `other`'s counts (of the same stage) to these."""
        for name in ("docs_in", "docs_out", "bytes_in", "bytes_out", "tokens_in", "tokens_out", "modified"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dropped = dict(Counter(self.dropped) + Counter(other.dropped))
        self.damaged = self.damaged + other.damaged

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dropped"] = dict(sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0])))
        if not self.damaged:  # stats.json stays as it was for intact inputs
            del out["damaged"]
        return out


def merge_stats(per_task: Iterable[list[dict[str, Any]]]) -> list[StageStats]:
    """Sum tasks' stage lists (dicts as written by `StageStats.to_dict`) stage by stage, keeping first-seen order."""
    merged: dict[str, StageStats] = {}
    for stages in per_task:
        for item in stages:
            stats = StageStats(**item)
            if stats.name in merged:
                merged[stats.name].add(stats)
            else:
                merged[stats.name] = stats
    return list(merged.values())


def render_report(stages: list[StageStats], title: str = "Data pipeline report") -> str:
    """A Markdown report: one table row per stage, the damaged input files, then the drop reasons of each stage
    that dropped documents."""
    lines = [
        f"# {title}",
        "",
        "| stage | docs in | docs out | kept | modified | tokens in | tokens out | MB in | MB out |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stages:
        kept = f"{100 * s.docs_out / s.docs_in:.1f}%" if s.docs_in else "-"
        lines.append(
            f"| {s.name} | {s.docs_in:,} | {s.docs_out:,} | {kept} | {s.modified:,} | {s.tokens_in:,} | "
            f"{s.tokens_out:,} | {s.bytes_in / 1e6:.2f} | {s.bytes_out / 1e6:.2f} |"
        )
    damaged = [entry for s in stages for entry in s.damaged]
    if damaged:
        lines += ["", "## Damaged inputs: records from the damage on are lost", ""]
        lines += ["| file | reason | from line | byte | detail |", "|---|---|---:|---:|---|"]
        for d in damaged:
            offset = "-" if d["offset"] is None else f"{d['offset']:,}"
            detail = d["detail"].replace("|", "\\|")
            lines.append(f"| {d['file']} | {d['reason']} | {d['line']:,} | {offset} | {detail} |")
    for s in stages:
        if s.dropped:
            lines += ["", f"## {s.name}: dropped", "", "| reason | docs | share of input |", "|---|---:|---:|"]
            for reason, count in s.to_dict()["dropped"].items():
                lines.append(f"| {reason} | {count:,} | {100 * count / max(s.docs_in, 1):.2f}% |")
    return "\n".join(lines) + "\n"
