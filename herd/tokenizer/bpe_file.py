"""The tiktoken BPE file format: one `base64(token_bytes) rank` line per mergeable token.

Reads it with line-numbered errors and writes it, for Meta's 128K file and herd-trained ones alike.
"""

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path

from herd.errors import HerdError
from herd.run_dir import write_text


def read_bpe_file(path: str | Path) -> dict[bytes, int]:
    """Return the mergeable ranks of a tiktoken BPE file; ranks must be 0..N-1 and cover all 256 bytes."""
    path = Path(path)
    if not path.is_file():
        raise HerdError(
            f"tokenizer file not found: {path} (pass the path of a tiktoken BPE file such as tokenizer.model)"
        )
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError as e:
        raise HerdError(f"{path} is not a tiktoken BPE file: non-ASCII byte at offset {e.start}") from None
    ranks: dict[bytes, int] = {}
    seen_ranks: set[int] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        token, rank = _parse_line(path, lineno, line)
        if token in ranks:
            raise HerdError(f"{path}:{lineno}: token {token!r} appears twice; each token needs one rank")
        if rank in seen_ranks:
            raise HerdError(f"{path}:{lineno}: rank {rank} appears twice; each rank needs one token")
        ranks[token] = rank
        seen_ranks.add(rank)
    _check_complete(path, ranks)
    return ranks


def write_bpe_file(ranks: Mapping[bytes, int], path: str | Path) -> Path:
    """Write mergeable ranks as a tiktoken BPE file, in rank order, atomically; returns the path."""
    path = Path(path)
    by_rank = sorted(ranks.items(), key=lambda item: item[1])
    lines = (f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in by_rank)
    write_text(path, "".join(lines))  # base64 and digits: ASCII, so UTF-8 writes the same bytes
    return path


def _parse_line(path: Path, lineno: int, line: str) -> tuple[bytes, int]:
    fields = line.split()
    if len(fields) != 2:
        raise HerdError(
            f"{path}:{lineno}: expected 'base64token rank', got {line[:60]!r}; is this a tiktoken BPE file?"
        )
    try:
        token = base64.b64decode(fields[0], validate=True)
        rank = int(fields[1])
    except (binascii.Error, ValueError):
        raise HerdError(f"{path}:{lineno}: bad token or rank in {line[:60]!r}; is this a tiktoken BPE file?") from None
    if not token or rank < 0:
        raise HerdError(f"{path}:{lineno}: empty token or negative rank in {line[:60]!r}")
    return token, rank


def _check_complete(path: Path, ranks: dict[bytes, int]) -> None:
    if not ranks:
        raise HerdError(f"{path} holds no tokens; pass a tiktoken BPE file")
    top = max(ranks.values())
    if top != len(ranks) - 1:
        raise HerdError(f"{path}: ranks must be 0..{len(ranks) - 1} without gaps, but the largest is {top}")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise HerdError(
            f"{path}: {len(missing)} single-byte tokens are missing (first: {missing[0]}); "
            "a byte-level BPE needs all 256"
        )
