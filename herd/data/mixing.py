"""Data mixing: sample cleaned sources to target token proportions within a token budget, repeating small sources
for several epochs, into shuffled output shards for the tokenizer step, with a report of the realised mix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from herd.config_overrides import apply_overrides, from_dict, read_config_file
from herd.data.document import Document
from herd.data.readers import InputConfig, good_documents
from herd.data.tokens import cached_tokenizer
from herd.data.writers import OutputFormat, ShardWriter, suffix
from herd.errors import HerdError
from herd.run_dir import write_json, write_text


@dataclass
class MixSource:
    """One source of the mix."""

    paths: list[str]
    """Cleaned shards (files or directories) of this source."""
    weight: float
    """Target share of the mix's tokens (weights are normalised to sum to 1)."""
    domain: str | None = None
    """Only documents whose `metadata.domain` is this (as the `domain` stage tags them); None: all."""


@dataclass
class MixConfig:
    """A data mix (`herd data mix MIX.yaml`)."""

    sources: dict[str, MixSource]
    out_dir: str
    token_budget: int
    """Tokens in the mix (Llama 3 tokens, or `tokenizer`'s)."""
    shard_tokens: int = 100_000_000
    """About this many tokens per output shard."""
    format: OutputFormat = "jsonl.zst"
    seed: int = 0
    tokenizer: str | None = None
    source_key: str = "source"
    """Metadata field that records each document's source name."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise HerdError("mix has no sources; list them under `sources:` as name: {paths: [...], weight: w}")
        if any(s.weight < 0 for s in self.sources.values()) or sum(s.weight for s in self.sources.values()) <= 0:
            raise HerdError("mix source weights must be >= 0 and not all 0")
        if self.token_budget <= 0 or self.shard_tokens <= 0:
            raise HerdError("token_budget and shard_tokens must be positive")


def run_mix(config: str | Path | MixConfig) -> dict:
    """Write the mix; returns (and writes to mix.json and mix.md) each source's target and realised tokens, epochs
    and documents. Per source: as many full passes as the target allows, then a seeded random subset of documents
    until the remaining target is met; every copy goes to a random shard, and each shard is shuffled."""
    if not isinstance(config, MixConfig):
        config = from_dict(MixConfig, apply_overrides(read_config_file(config), ()))
    out = Path(config.out_dir)
    encode = cached_tokenizer(config.tokenizer).encode
    total_weight = sum(s.weight for s in config.sources.values())
    n_shards = max(1, math.ceil(config.token_budget / config.shard_tokens))
    rng = np.random.default_rng(config.seed)
    parts = [out / "_parts" / f"shard-{i:05d}.jsonl" for i in range(n_shards)]
    writers = [ShardWriter(p, "jsonl") for p in parts]
    report: dict = {"token_budget": config.token_budget, "shards": n_shards, "sources": {}}
    for name, source in config.sources.items():
        tokens = np.array([len(encode(doc.text)) for doc in _documents(source)], dtype=np.int64)
        target = round(config.token_budget * source.weight / total_weight)
        if target and not tokens.sum():
            raise HerdError(f"mix source {name!r} has no documents; check its paths (and domain)")
        full_epochs, left = divmod(target, max(int(tokens.sum()), 1))
        copies = np.full(len(tokens), full_epochs, dtype=np.int64)
        order = rng.permutation(len(tokens))
        if left > 0:  # a random subset for the rest: documents in shuffled order until `left` tokens are reached
            copies[order[: int(np.searchsorted(np.cumsum(tokens[order]), left)) + 1]] += 1
        destinations = iter(rng.integers(n_shards, size=int(copies.sum())).tolist())
        for doc, count in zip(_documents(source), copies.tolist()):
            record = {**doc.to_record(), config.source_key: name}
            for _ in range(count):
                writers[next(destinations)].write(record)
        realised = int((copies * tokens).sum())
        report["sources"][name] = {
            "weight": source.weight / total_weight,
            "target_tokens": target,
            "source_tokens": int(tokens.sum()),
            "realised_tokens": realised,
            "epochs": round(realised / max(int(tokens.sum()), 1), 3),
            "documents": int(copies.sum()),
        }
    for writer in writers:
        writer.close()
    for i, part in enumerate(parts):
        lines = part.read_bytes().splitlines(keepends=True)
        with ShardWriter(out / f"shard-{i:05d}{suffix(config.format)}", config.format) as writer:
            for j in rng.permutation(len(lines)):
                writer.write(json.loads(lines[j]))
        part.unlink()
    (out / "_parts").rmdir()
    realised_total = sum(s["realised_tokens"] for s in report["sources"].values())
    for s in report["sources"].values():
        s["realised_share"] = round(s["realised_tokens"] / max(realised_total, 1), 4)
    report["realised_tokens"] = realised_total
    report["config"] = asdict(config)
    write_json(out / "mix.json", report)
    write_text(out / "mix.md", render_mix_report(report))
    return report


def render_mix_report(report: dict) -> str:
    """A Markdown table of the mix: per source target vs realised tokens and share, epochs, documents."""
    title = f"# Data mix: {report['realised_tokens']:,} tokens (budget {report['token_budget']:,}), {report['shards']} shards"
    lines = [
        title,
        "",
        "| source | weight | target tokens | realised tokens | realised share | source tokens | epochs | docs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in report["sources"].items():
        lines.append(
            f"| {name} | {s['weight']:.3f} | {s['target_tokens']:,} | {s['realised_tokens']:,} | "
            f"{s['realised_share']:.3f} | {s['source_tokens']:,} | {s['epochs']:.2f} | {s['documents']:,} |"
        )
    return "\n".join(lines) + "\n"


def _documents(source: MixSource) -> Iterator[Document]:
    for doc in good_documents(InputConfig(paths=source.paths)):
        if source.domain is None or doc.metadata.get("domain") == source.domain:
            yield doc
