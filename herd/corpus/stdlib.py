"""Real text for tiny models: the source of the Python standard library this interpreter runs.

Every Python installation carries about 30 MB of it (code, docstrings, comments, tests, written by hundreds of
people), so it is real-world text a sweep can use with no download. Unlike herd's generated corpus, whose
templated documents a tiny model learns in jumps (one skill at a time), its loss falls smoothly with compute:
the text scaling-law sweeps need on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from pathlib import Path

from herd.run_dir import atomic_open

VAL_SHARE = 50
"""One file in this many (chosen by a hash of its path, so the split never changes) is held out for validation."""


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """Every .py file of the standard library (installed packages excluded), in a fixed order."""
    root = stdlib_root()
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)


def write_stdlib_corpus(out_dir: str | Path) -> dict[str, int]:
    """`out_dir/train.jsonl` and `out_dir/val.jsonl`, one {"text"} record per readable file; returns the counts."""
    out, root = Path(out_dir), stdlib_root()
    counts = {"train": 0, "val": 0}
    with atomic_open(out / "train.jsonl") as train, atomic_open(out / "val.jsonl") as val:
        for path in stdlib_files():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            digest = hashlib.sha256(str(path.relative_to(root)).encode()).digest()
            split = "val" if int.from_bytes(digest[:8], "big") % VAL_SHARE == 0 else "train"
            (val if split == "val" else train).write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            counts[split] += 1
    return counts
