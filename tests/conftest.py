"""Shared tiny fixtures: tokenizers (Meta's 128K from the llama-models package, a 520-id byte-level BPE, a BPE
trained on tiny.QA), the tiny model (tiny.make_model) saved as a checkpoint in herd, HF or Meta format, and the
pretraining tests' token shards.

Session-scoped fixtures are built once for the whole run, so a test must not change them: a test that damages a
checkpoint copies it or saves its own. `tok` is built for each test. Helpers live in tests/tiny.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import herd
from herd.tokenizer import Tokenizer, default_tokenizer_path, write_bpe_file
from herd.tokenizer.train_bpe import train_tokenizer
from herd.train.token_shards import tokenize_corpus
from tests.tiny import QA, byte_bpe_ranks, make_docs, make_model, write_texts


@pytest.fixture(scope="session")
def meta_tokenizer() -> Tokenizer:
    """Meta's Llama 3 tokenizer (128,256 ids), as the llama-models package ships it."""
    return Tokenizer(default_tokenizer_path())


@pytest.fixture(scope="session")
def byte_bpe_path(tmp_path_factory) -> Path:
    """A tokenizer.model of tiny.byte_bpe_ranks(): 520 ids, so that a conversion's vocabulary stays small."""
    return write_bpe_file(byte_bpe_ranks(), tmp_path_factory.mktemp("byte_bpe") / "tokenizer.model")


@pytest.fixture(scope="session")
def tiny_tok_path(tmp_path_factory) -> Path:
    """A BPE trained on the QA chats' words (556 ids): whole words, so tiny models learn the answers fast."""
    tmp = tmp_path_factory.mktemp("tiny_tok")
    texts = [f"{q} {a} answer with a color system user assistant good bad" for q, a in QA] * 20
    return train_tokenizer(texts, 300, tmp / "tok.model", show_progress=False)


@pytest.fixture()
def tok(tiny_tok_path) -> Tokenizer:
    """The tiny trained tokenizer (modules that want another tokenizer define their own `tok`)."""
    return Tokenizer(tiny_tok_path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_tok_path, tmp_path_factory) -> Callable[[str], Path]:
    """fmt ("herd", "hf" or "meta") -> the directory of tiny.make_model (seed 0) with the tiny tokenizer, saved in
    that format once per run. Read-only: copy it before changing a file."""
    saved: dict[str, Path] = {}

    def checkpoint(fmt: str = "herd") -> Path:
        if fmt not in saved:
            tok = Tokenizer(tiny_tok_path)
            saved[fmt] = herd.save(make_model(tok), tok, tmp_path_factory.mktemp(f"tiny_{fmt}") / "base", format=fmt)
        return saved[fmt]

    return checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint) -> Path:
    """The tiny model in herd format (read-only)."""
    return tiny_checkpoint("herd")


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> dict[str, str]:
    """Train and validation token shards of a byte-level tokenizer (256 byte tokens + 256 specials: 512 ids)."""
    tmp = tmp_path_factory.mktemp("shards")
    tok = write_bpe_file({bytes([i]): i for i in range(256)}, tmp / "bytes.model")
    out = {}
    for name, seed, n in (("train", 0, 300), ("val", 1, 40)):
        corpus = write_texts(tmp / f"{name}.jsonl", make_docs(n, seed))
        tokenize_corpus([corpus], tok, tmp / name, 1, show_progress=False)
        out[name] = str(tmp / name)
    return out
