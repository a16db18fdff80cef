"""Speedrun stages before training: the corpus, the data pipelines, the tokenizer and the token shards.

Each takes (run context, stage dir, settings) and returns the outputs recorded in the stage's manifest.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herd.corpus import generate_corpus
from herd.data.pipeline import run_pipeline
from herd.run_dir import atomic_open, write_json
from herd.speedrun.config import CorpusSettings, DataSettings, TokenizerSettings, TokenizeSettings

if TYPE_CHECKING:
    from herd.speedrun.run import RunContext

DOMAINS = ("web", "math", "multilingual", "code")
# Llama 3 cleans web text with heuristic filters and dedup, and code / math with their own pipelines.
PIPELINES: dict[str, list[Any]] = {
    "web": ["normalize", {"gopher_quality": {"min_words": 30}}, "gopher_repetition", "c4_quality", "pii_mask",
            "exact_dedup", {"minhash_dedup": {"ngram": 5, "bands": 14, "rows": 8}}, "line_dedup"],
    "math": ["normalize", "exact_dedup", {"minhash_dedup": {"ngram": 5, "bands": 14, "rows": 8}}],
    "multilingual": ["normalize", "exact_dedup", {"minhash_dedup": {"ngram": 5, "bands": 14, "rows": 8}}],
    "code": ["exact_dedup", {"minhash_dedup": {"ngram": 5, "bands": 14, "rows": 8}}],
}


def corpus_stage(ctx: RunContext, out: Path, s: CorpusSettings) -> dict[str, Any]:
    return generate_corpus(out, s.size, ctx.seed)


def data_stage(ctx: RunContext, out: Path, s: DataSettings) -> dict[str, Any]:
    """One pipeline per domain (clean/<domain>), then split/<domain>.jsonl for training and split/val.jsonl
    (every `val_every`-th clean document of each domain) for validation."""
    raw = ctx.stage_dir("corpus") / "raw"
    stats = {}
    for domain in DOMAINS:
        config = {"input": {"paths": [str(raw / domain)]},
                  "output": {"dir": str(out / "clean" / domain), "format": "jsonl.gz"},
                  "workers": s.workers, "count_tokens": False, "stages": PIPELINES[domain]}
        path = out / "pipelines" / f"{domain}.json"
        write_json(path, config, indent=1)
        run_pipeline(path)
        stats[domain] = str(out / "clean" / domain / "stats.json")
    split = out / "split"
    counts: dict[str, int] = {}
    planted_left: dict[str, int] = {}
    with atomic_open(split / "val.jsonl") as val:
        for domain in DOMAINS:
            with atomic_open(split / f"{domain}.jsonl") as train:
                for i, record in enumerate(_clean_records(out / "clean" / domain)):
                    planted = record.get("metadata", {}).get("planted")
                    if planted:
                        planted_left[planted] = planted_left.get(planted, 0) + 1
                    line = json.dumps({"text": record["text"]}, ensure_ascii=False) + "\n"
                    (val if i % s.val_every == s.val_every - 1 else train).write(line)
                    counts[domain] = counts.get(domain, 0) + 1
    return {"stats": stats, "clean_docs": counts, "planted_left": planted_left, "split": str(split)}


def _clean_records(directory: Path):
    for shard in sorted(directory.glob("*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def tokenizer_stage(ctx: RunContext, out: Path, s: TokenizerSettings) -> dict[str, Any]:
    """`source: bpe` trains a BPE of `vocab_size` on the training split; `llama3` copies Meta's 128K tokenizer
    (shipped by llama-models; its ids need uint32 token shards)."""
    from herd.tokenizer import SPECIAL_TOKENS, Tokenizer, default_tokenizer_path
    from herd.data.readers import corpus_texts
    from herd.tokenizer.train_bpe import train_tokenizer

    path = out / "tokenizer.model"
    if s.source == "llama3":
        shutil.copyfile(default_tokenizer_path(), path)
    else:
        split = ctx.stage_dir("data") / "split"
        train_tokenizer(corpus_texts([split / f"{d}.jsonl" for d in DOMAINS])[1], s.vocab_size, path, show_progress=False)
    return {"tokenizer": str(path), "source": s.source, "vocab_size": Tokenizer(path).n_words - len(SPECIAL_TOKENS)}


def tokenize_stage(ctx: RunContext, out: Path, s: TokenizeSettings) -> dict[str, Any]:
    from herd.train.token_shards import tokenize_corpus

    split, tok = ctx.stage_dir("data") / "split", ctx.stage_dir("tokenizer") / "tokenizer.model"
    outputs: dict[str, Any] = {"sources": {}, "tokens": {}}
    for name in (*DOMAINS, "val"):
        manifest = tokenize_corpus([split / f"{name}.jsonl"], tok, out / name, s.workers, show_progress=False)
        outputs["sources"][name] = str(out / name)
        outputs["tokens"][name] = sum(shard.num_tokens for shard in manifest.shards)
    outputs["bytes"] = {name: (split / f"{name}.jsonl").stat().st_size for name in (*DOMAINS, "val")}
    return outputs
