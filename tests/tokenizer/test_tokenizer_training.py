"""BPE training: HF tokenizers learns the merges, tiktoken (herd.tokenizer.Tokenizer) must reproduce HF's ids."""

import gzip
import json
import random
from pathlib import Path

import pytest

from herd.data import Document
from herd.data.readers import corpus_texts
from herd.data.writers import ShardWriter
from herd.errors import HerdError
from herd.tokenizer import Tokenizer, read_bpe_file
from herd.tokenizer.train_bpe import mergeable_ranks, train_hf_bpe, train_tokenizer
from tests.tiny import write_texts

SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "text" / "tinyshakespeare.txt"

# Text a small vocabulary never saw: other scripts, emoji, control bytes, long digit and space runs, CRLF.
EDGE_TEXTS = [
    "naïve café — 日本語のテキスト, Ελληνικά, العربية, 😀👍🏽 and \x00\x07\x1b[0m",
    "1234567890 3.14159 1,000,000 0x7fff\r\n\r\n\ttabs\t\tand    spaces   \n\n\n   end",
    "it's I'LL we've THEY'RE don't 's 'd x" + " " * 40 + "y",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
]


def synthetic_docs(n: int, seed: int) -> list[str]:
    """Pseudo-English documents: words from a small syllable set, numbers, punctuation, a little unicode."""
    rng = random.Random(seed)
    syllables = ["the", "an", "ing", "er", "qu", "st", "o", "ai", "ch", "é", "ü", "ba", "ko", "ri"]
    docs = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(5, 80)):
            roll = rng.random()
            if roll < 0.08:
                words.append(str(rng.randint(0, 99999)))
            elif roll < 0.12:
                words.append(rng.choice([",", ".", "!", "?", "'s", "\n", "\n\n", "  "]))
            else:
                word = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
                words.append(word.capitalize() if rng.random() < 0.1 else word)
        docs.append(" ".join(words))
    return docs


@pytest.fixture(scope="module")
def shakespeare() -> tuple[list[str], list[str]]:
    """(train paragraphs, held-out paragraphs): the first 90% of tinyshakespeare and the rest."""
    if not SHAKESPEARE.is_file():
        pytest.skip(f"tinyshakespeare corpus not found at {SHAKESPEARE} (shared/data is not on this machine)")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    return text[:cut].split("\n\n"), text[cut:].split("\n\n")


def assert_tiktoken_matches_hf(train: list[str], held_out: list[str], vocab_size: int, tmp_path: Path) -> None:
    hf = train_hf_bpe(train, vocab_size)
    tok = Tokenizer(
        train_tokenizer(
            corpus_texts([write_texts(tmp_path / "train.jsonl", train)])[1], vocab_size, tmp_path / "tok.model", show_progress=False
        )
    )
    assert read_bpe_file(tok.path) == mergeable_ranks(hf)  # training is deterministic
    mismatched = [text for text in held_out + EDGE_TEXTS if hf.encode(text).ids != tok.encode(text)]
    assert not mismatched, f"{len(mismatched)} texts encode differently, first: {mismatched[0][:80]!r}"


@pytest.mark.parametrize("vocab_size", [300, 1000])
def test_tiktoken_reproduces_hf_on_held_out_shakespeare(shakespeare, vocab_size, tmp_path):
    train, held_out = shakespeare
    assert_tiktoken_matches_hf(train, held_out, vocab_size, tmp_path)


def test_tiktoken_reproduces_hf_on_held_out_synthetic_text(tmp_path):
    assert_tiktoken_matches_hf(synthetic_docs(400, seed=0), synthetic_docs(100, seed=1), 700, tmp_path)


def test_trained_file_has_the_requested_size_and_all_bytes(tmp_path):
    path = train_tokenizer(
        corpus_texts([write_texts(tmp_path / "c.jsonl", synthetic_docs(300, 0))])[1],
        500,
        tmp_path / "out" / "tok.model",
        show_progress=False,
    )
    ranks = read_bpe_file(path)  # checks ranks 0..N-1 and the 256 single bytes
    assert len(ranks) == 500
    tok = Tokenizer(path)
    assert tok.n_words == 500 + 256 and tok.bos_id == 500
    assert max(len(token) for token in ranks) > 3  # merges were learned


def test_round_trip_of_unseen_text(tmp_path):
    tok = Tokenizer(
        train_tokenizer(
            corpus_texts([write_texts(tmp_path / "c.jsonl", synthetic_docs(200, 0))])[1],
            400,
            tmp_path / "tok.model",
            show_progress=False,
        )
    )
    for text in EDGE_TEXTS:
        assert tok.decode(tok.encode(text)) == text


def test_larger_vocabulary_compresses_more(tmp_path):
    corpus = [write_texts(tmp_path / "c.jsonl", synthetic_docs(400, 0))]
    held_out = "\n\n".join(synthetic_docs(50, seed=1))
    counts = [
        len(Tokenizer(train_tokenizer(corpus_texts(corpus)[1], size, tmp_path / f"{size}.model", show_progress=False)).encode(held_out))
        for size in (256, 400, 800)
    ]
    assert counts[0] == len(held_out.encode("utf-8"))  # bytes only
    assert counts[0] > counts[1] > counts[2]


def test_corpus_inputs_are_the_data_pipelines(tmp_path):
    """JSONL (plain, .gz, .zst), Parquet, text files and directories, read in order by herd.data.readers."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("second file")
    (tmp_path / "d" / "sub" / "c.txt").write_text("third file")
    (tmp_path / "d" / "notes.md").write_text("not a corpus file")
    with gzip.open(tmp_path / "d" / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "gz one"}) + "\n\n" + json.dumps({"text": ""}) + "\n")
    for suffix in ("jsonl.zst", "parquet"):
        with ShardWriter(tmp_path / "d" / f"z.{suffix}", suffix) as writer:
            writer.write_document(Document(text=f"{suffix} doc", id="1"))
    top = write_texts(tmp_path / "top.jsonl", ["first", "doc"])
    files, texts = corpus_texts([top, tmp_path / "d"])
    assert [p.name for p in files] == ["top.jsonl", "a.jsonl.gz", "b.txt", "c.txt", "z.jsonl.zst", "z.parquet"]
    assert list(texts) == ["first", "doc", "gz one", "second file", "third file", "jsonl.zst doc", "parquet doc"]
    path = train_tokenizer(corpus_texts([top, tmp_path / "d"])[1], 260, tmp_path / "tok.model", show_progress=False)
    assert len(read_bpe_file(path)) == 260


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": 3}\n', r"bad.jsonl:2: missing_text \(no string 'text' field"),
        ("bad.jsonl", "not json\n", r"bad.jsonl:1: invalid_json .*herd data run"),
        ("bad.csv", "a,b\n", r"bad.csv: unknown file type"),
    ],
)
def test_bad_corpus_files_are_reported(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(HerdError, match=message):
        list(corpus_texts([tmp_path / name])[1])


def test_missing_input_and_empty_directory(tmp_path):
    with pytest.raises(HerdError, match="input not found"):
        corpus_texts([tmp_path / "nope.txt"])
    with pytest.raises(HerdError, match="no .jsonl/.jsonl.gz/.jsonl.zst/.parquet/.txt files"):
        corpus_texts([tmp_path])


def test_vocab_size_errors(tmp_path):
    corpus = [write_texts(tmp_path / "c.jsonl", ["a tiny corpus"])]
    with pytest.raises(HerdError, match="below 256"):
        train_tokenizer(corpus_texts(corpus)[1], 100, tmp_path / "t.model", show_progress=False)
    with pytest.raises(HerdError, match="short of vocab_size 5000"):
        train_tokenizer(corpus_texts(corpus)[1], 5000, tmp_path / "t.model", show_progress=False)
    assert not (tmp_path / "t.model").exists()
