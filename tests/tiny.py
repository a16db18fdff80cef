"""Tiny shared test objects: the question/answer set the tiny tokenizer is trained on and its chat records, a
JSONL writer, the tiny llama-shaped config and model, the byte-level BPE's ranks, and the tiny pretraining run
(its documents, model fields, config and losses). conftest.py builds the shared fixtures from them; tests import
the helpers (`from tiny import make_model`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from herd.config_overrides import load_config
from herd.model import ModelConfig, Transformer, build_model
from herd.tokenizer import Tokenizer
from herd.train.config import PretrainConfig
from herd.train.metrics import read_records

QA = [("what is the sky", "blue"), ("what is grass", "green"), ("what is snow", "white"), ("what is coal", "black"),
      ("what is the sun", "yellow"), ("what is a rose", "red"), ("what is the sea", "deep blue"),
      ("what is a plum", "purple")]
BYTE_MERGES = [b"th", b"he", b"the", b" t", b" the", b"in", b"er", b"an"]
TINY_MODEL = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 32, "max_seq_len": 64}
"""The pretraining tests' model: these fields over the `tiny` preset, on conftest's 512-id byte shards."""


def write_jsonl(path: Path, records: list) -> Path:
    """One JSON record a line, its folder made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_texts(path: Path, texts: list[str]) -> Path:
    """A JSONL corpus: one {"text": ...} record per text."""
    return write_jsonl(path, [{"text": text} for text in texts])


def chat_records() -> list[dict]:
    return [{"messages": [{"role": "system", "content": "answer with a color"}, {"role": "user", "content": q},
                          {"role": "assistant", "content": a}]} for q, a in QA]


def byte_bpe_ranks() -> dict[bytes, int]:
    """The 256 bytes and 8 merges: 264 ranks, 520 ids with the specials, small enough to convert quickly."""
    return {bytes([b]): b for b in range(256)} | {m: 256 + i for i, m in enumerate(BYTE_MERGES)}


def model_config(**changes) -> ModelConfig:
    """dim 64, 2 layers, 4 heads over 2 KV heads, the byte BPE's 520 ids, FFN 192 wide, 256 positions."""
    base = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=520, multiple_of=32,
                       ffn_dim_multiplier=None, max_seq_len=256)
    return base.replace(**changes)


def make_model(tok: Tokenizer, seed: int = 0) -> Transformer:
    """The tiny config on `tok`'s vocabulary, initialized with `seed`."""
    model = build_model(model_config(vocab_size=tok.n_words))
    model.init_weights(seed)
    return model


def make_docs(n: int, seed: int) -> list[str]:
    """`n` documents of 3 to 80 words drawn from 50 random words over a-h (the pretraining shards' text)."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 5))) for _ in range(50)]
    return [" ".join(rng.choice(words) for _ in range(rng.choice([3, 10, 30, 80]))) for _ in range(n)]


def tiny_config(shards: dict[str, str], out: Path, *overrides: str) -> PretrainConfig:
    """A 12-step CPU pretraining of TINY_MODEL on `shards` (conftest's fixture) into `out`, with `overrides`."""
    base = {
        "out_dir": str(out), "model": {"preset": "tiny", "fields": TINY_MODEL},
        "data": {"sources": {"train": shards["train"]}, "val_sources": {"val": shards["val"]}, "val_batches": 2},
        "optim": {"lr": 3e-3, "warmup_steps": 3, "anneal_steps": 2},
        "steps": 12, "batch_size": 4, "seq_len": 32, "checkpoint_interval": 4, "eval_interval": 6,
        "device": "cpu", "progress": False, "export_format": None,
    }
    path = out.parent / f"{out.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(base))
    return load_config(PretrainConfig, path, overrides)


def losses(run_dir: Path) -> list[float]:
    """The training losses a run's metrics.jsonl recorded, in order."""
    return [r["loss"] for r in read_records(Path(run_dir) / "metrics.jsonl") if "loss" in r]
