"""Tiny shared test objects: the question/answer set the tiny tokenizer is trained on and its chat records, a
JSONL writer, the tiny llama-shaped config and model, and the byte-level BPE's ranks. conftest.py builds the
shared fixtures from them; tests import the helpers (`from tiny import make_model`)."""

from __future__ import annotations

import json
from pathlib import Path

from herd.model import ModelConfig, Transformer, build_model
from herd.tokenizer import Tokenizer

QA = [("what is the sky", "blue"), ("what is grass", "green"), ("what is snow", "white"), ("what is coal", "black"),
      ("what is the sun", "yellow"), ("what is a rose", "red"), ("what is the sea", "deep blue"),
      ("what is a plum", "purple")]
BYTE_MERGES = [b"th", b"he", b"the", b" t", b" the", b"in", b"er", b"an"]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


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
