"""Token data: shards (parallel, deterministic, resumable), packing with document ids, the mixing data loader."""

import filecmp
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from herd.data.readers import corpus_texts
from herd.errors import HerdError
from herd.model import build_model
from herd.tokenizer import Tokenizer, load_tokenizer
from herd.tokenizer.train_bpe import train_tokenizer
from herd.train import token_shards
from herd.train.data_loader import DataLoaderConfig, TokenDataLoader
from herd.train.packing import IGNORE_INDEX, PackedRows, shift, split_rows
from herd.train.token_shards import TokenManifest, TokenShards, tokenize_corpus
from tests.tiny import model_config, write_texts


def make_docs(n: int, seed: int, alphabet: str = "abcdefghij") -> list[str]:
    """Documents of 1 to 300 random words (some very short, some longer than a packed row)."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(200)]
    return [" ".join(rng.choice(words) for _ in range(rng.choice([1, 5, 20, 60, 300]))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tok")
    corpus = write_texts(tmp / "train.jsonl", make_docs(300, 0) + make_docs(100, 1, alphabet="0123456789+="))
    return train_tokenizer(corpus_texts([corpus])[1], 400, tmp / "tok.model", show_progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[Path], list[str]]:
    """Corpus inputs (a JSONL file, a directory of text and JSONL) and its documents in reading order."""
    tmp = tmp_path_factory.mktemp("corpus")
    first, second, third = make_docs(150, 2), make_docs(60, 3), "a whole text file is one document\n"
    (tmp / "dir").mkdir()
    write_texts(tmp / "dir" / "a.jsonl", second)
    (tmp / "dir" / "b.txt").write_text(third)
    return [write_texts(tmp / "first.jsonl", first), tmp / "dir"], first + second + [third]


def shard_documents(shards: TokenShards) -> list[list[int]]:
    starts = np.concatenate([[0], np.cumsum(shards.doc_lengths)])
    return [shards.read(int(a), int(b)).tolist() for a, b in itertools.pairwise(starts)]


def test_shards_hold_every_document_in_order(tokenizer_path, corpus, tmp_path):
    inputs, docs = corpus
    manifest = tokenize_corpus(inputs, tokenizer_path, tmp_path, 1, shard_chars=5000, show_progress=False)
    tok = Tokenizer(tokenizer_path)
    assert manifest.complete and len(manifest.shards) > 3
    assert manifest.dtype == "uint16" and manifest.n_words == 656 and manifest.bos_id == tok.bos_id
    assert manifest.num_docs == len(docs)
    shards = TokenShards(tmp_path)
    assert shard_documents(shards) == [tok.encode(doc) for doc in docs]  # raw: no BOS/EOS
    assert manifest.num_tokens == int(shards.doc_lengths.sum())
    assert np.memmap(tmp_path / "shard_00000.bin", dtype=np.uint16).size == manifest.shards[0].num_tokens
    assert TokenManifest.load(tmp_path) == manifest


def test_worker_count_does_not_change_shards(tokenizer_path, corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(token_shards, "CHUNK_CHARS", 700)  # several tasks per shard
    inputs, _ = corpus
    one = tokenize_corpus(inputs, tokenizer_path, tmp_path / "one", 1, shard_chars=8000, show_progress=False)
    two = tokenize_corpus(inputs, tokenizer_path, tmp_path / "two", 2, shard_chars=8000, show_progress=False)
    assert one == two and len(one.shards) > 2
    for shard in one.shards:
        for suffix in (".bin", ".idx.npy"):
            name = shard.name + suffix
            assert filecmp.cmp(tmp_path / "one" / name, tmp_path / "two" / name, shallow=False), name


def test_large_vocabulary_uses_uint32(tmp_path):
    try:
        tok = load_tokenizer(None)
    except HerdError as e:
        pytest.skip(f"Meta's tokenizer is unavailable: {e}")
    text = tmp_path / "doc.txt"
    text.write_text("Meta's 128K vocabulary needs 32-bit ids: Grüße, 日本語.")
    manifest = tokenize_corpus([text], None, tmp_path / "out", 1, show_progress=False)
    assert manifest.dtype == "uint32" and manifest.n_words == 128256
    assert shard_documents(TokenShards(tmp_path / "out")) == [tok.encode(text.read_text())]


def test_interrupted_run_resumes_and_skips_done_shards(tokenizer_path, corpus, tmp_path, monkeypatch):
    inputs, _ = corpus
    expected = tokenize_corpus(inputs, tokenizer_path, tmp_path / "ref", 1, shard_chars=5000, show_progress=False)
    write_shard = token_shards._write_shard
    calls = []

    class Crash(Exception):
        pass

    def crash_on_third(*args, **kwargs):
        calls.append(args[1])
        if calls == ["shard_00000", "shard_00001", "shard_00002"]:
            raise Crash
        return write_shard(*args, **kwargs)

    monkeypatch.setattr(token_shards, "_write_shard", crash_on_third)
    with pytest.raises(Crash):
        tokenize_corpus(inputs, tokenizer_path, tmp_path / "out", 1, shard_chars=5000, show_progress=False)
    with pytest.raises(HerdError, match="incomplete"):
        TokenShards(tmp_path / "out")
    first_mtime = (tmp_path / "out" / "shard_00000.bin").stat().st_mtime_ns
    calls.clear()
    resumed = tokenize_corpus(inputs, tokenizer_path, tmp_path / "out", 1, shard_chars=5000, show_progress=False)
    assert calls[0] == "shard_00002"  # the two finished shards were skipped
    assert (tmp_path / "out" / "shard_00000.bin").stat().st_mtime_ns == first_mtime
    assert resumed.shards == expected.shards
    for shard in expected.shards:
        assert filecmp.cmp(tmp_path / "ref" / f"{shard.name}.bin", tmp_path / "out" / f"{shard.name}.bin", False)
    calls.clear()
    tokenize_corpus(inputs, tokenizer_path, tmp_path / "out", 1, shard_chars=5000, show_progress=False)
    assert calls == []  # a complete directory is left as it is


def test_directory_of_another_job_is_refused(tokenizer_path, corpus, tmp_path):
    inputs, _ = corpus
    tokenize_corpus(inputs[:1], tokenizer_path, tmp_path, 1, show_progress=False)
    with pytest.raises(HerdError, match="holds token shards of other inputs"):
        tokenize_corpus(inputs, tokenizer_path, tmp_path, 1, show_progress=False)


def reference_rows(docs: list[list[int]], seq_len: int, bos: int, eos: int) -> list[tuple[list[int], list[int]]]:
    """Packing written the obvious way: one long stream, windows of seq_len + 1 with stride seq_len."""
    stream, owner = [], []
    for i, doc in enumerate(docs):
        stream += [bos, *doc, eos]
        owner += [i] * (len(doc) + 2)
    rows = []
    for start in range(0, len(stream) - seq_len, seq_len):
        ids = owner[start : start + seq_len + 1]
        rows.append((stream[start : start + seq_len + 1], [d - ids[0] for d in ids]))
    return rows


def packed(docs: list[list[int]], seq_len: int, bos: int = 1000, eos: int = 1001) -> PackedRows:
    flat = np.array([t for doc in docs for t in doc], dtype=np.int64)
    return PackedRows(np.array([len(d) for d in docs]), lambda a, b: flat[a:b], seq_len, bos, eos)


@pytest.mark.parametrize("seq_len", [1, 3, 8, 50])
def test_packing_matches_the_obvious_stream(seq_len):
    rng = random.Random(seq_len)
    docs = [[rng.randrange(1000) for _ in range(rng.choice([0, 1, 2, 7, 40, 130]))] for _ in range(40)]
    rows = packed(docs, seq_len)
    expected = reference_rows(docs, seq_len, 1000, 1001)
    assert rows.num_rows == len(expected)
    for index, (tokens, doc_ids) in enumerate(expected):
        got_tokens, got_ids = rows.row(index)
        assert got_tokens.tolist() == tokens and got_ids.tolist() == doc_ids


@pytest.mark.parametrize("parts", [2, 4])
def test_split_rows_are_the_rows_packed_at_the_shorter_length(parts):
    rng = random.Random(parts)
    docs = [[rng.randrange(1000) for _ in range(rng.choice([1, 2, 7, 40]))] for _ in range(60)]
    long, short = packed(docs, 16), packed(docs, 16 // parts)
    rows = [long.row(i) for i in range(long.num_rows)]
    batch = tuple(torch.from_numpy(a) for a in shift(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])))
    pieces = split_rows(batch, parts)
    assert pieces[0].shape == (long.num_rows * parts, 16 // parts)
    for index in range(long.num_rows * parts):
        expected = shift(*short.row(index))
        assert all(piece[index].tolist() == want.tolist() for piece, want in zip(pieces, expected))


def test_loader_serves_shorter_rows_from_the_same_data(sources):
    plain, staged = loader(sources), loader(sources)
    staged.set_seq_len(8)
    for want, got in zip(take(plain, 3), take(staged, 3)):
        assert got[0].shape == (8, 8)
        assert all(torch.equal(a, b) for a, b in zip(split_rows(want, 2), got))
    assert staged.state_dict() == plain.state_dict()
    with pytest.raises(HerdError, match="seq_len 5 must divide the data loader's seq_len 16"):
        staged.set_seq_len(5)


def test_bos_eos_doc_ids_and_masked_targets():
    rows = packed([[5, 6, 7], [8], [9, 10, 11, 12, 13, 14, 15, 16]], seq_len=8)
    tokens, doc_ids = rows.row(0)
    assert tokens.tolist() == [1000, 5, 6, 7, 1001, 1000, 8, 1001, 1000]
    assert doc_ids.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2]
    inputs, targets, ids = shift(tokens, doc_ids)
    assert inputs.tolist() == [1000, 5, 6, 7, 1001, 1000, 8, 1001]
    assert targets.tolist() == [5, 6, 7, 1001, IGNORE_INDEX, 8, 1001, IGNORE_INDEX]  # EOS -/-> next BOS
    assert ids.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    # The long document continues in the next row without a new BOS; the rows share one token.
    tokens, doc_ids = rows.row(1)
    assert tokens.tolist() == [1000, 9, 10, 11, 12, 13, 14, 15, 16] and doc_ids.tolist() == [0] * 9
    assert rows.num_rows == 2  # the tail [16, EOS] is shorter than a row: dropped


def test_model_doc_ids_make_a_packed_row_equal_separate_documents():
    torch.manual_seed(0)
    config = model_config(dim=32, vocab_size=64, multiple_of=16, max_seq_len=64)
    model = build_model(config)
    model.init_weights(seed=0)
    docs = [[3, 4, 5, 6], [7, 8], [9, 10, 11, 12, 13, 14, 15, 16]]
    tokens, doc_ids = packed(docs, seq_len=15, bos=1, eos=2).row(0)
    inputs, _, ids = shift(tokens, doc_ids)
    inputs, ids = torch.from_numpy(inputs)[None], torch.from_numpy(ids)[None]
    with torch.no_grad():
        together = model(inputs, doc_ids=ids)[0]
        for doc in ids.unique():
            where = (ids[0] == doc).nonzero()[:, 0]
            alone = model(inputs[:, where])[0]
            torch.testing.assert_close(together[where], alone, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def sources(tokenizer_path, tmp_path_factory) -> dict[str, Path]:
    """Three token sources of different sizes and alphabets."""
    tmp = tmp_path_factory.mktemp("sources")
    out = {}
    for name, docs in [
        ("general", make_docs(120, 10)),
        ("math", make_docs(40, 11, "0123456789+=")),
        ("code", make_docs(30, 12, "abc(){}")),
    ]:
        out[name] = tmp / name
        tokenize_corpus([write_texts(tmp / f"{name}.jsonl", docs)], tokenizer_path, out[name], 1, show_progress=False)
    return out


def loader(sources, rank=0, world_size=1, **overrides) -> TokenDataLoader:
    options = {"weights": {"general": 0.5, "math": 0.3, "code": 0.2}, "batch_size": 4, "seq_len": 16, **overrides}
    return TokenDataLoader(DataLoaderConfig(sources=sources, **options), rank, world_size)


def take(data: TokenDataLoader, n: int) -> list[tuple[torch.Tensor, ...]]:
    return [next(data) for _ in range(n)]


def test_batches_have_the_training_shapes(sources):
    tokens, targets, doc_ids = next(loader(sources))
    for t in (tokens, targets, doc_ids):
        assert t.shape == (4, 16) and t.dtype == torch.long
    kept = targets[:, :-1] != IGNORE_INDEX  # targets are the next inputs, except across documents
    assert torch.equal(targets[:, :-1][kept], tokens[:, 1:][kept])


def test_resume_from_state_gives_the_same_batches_bitwise(sources):
    data = loader(sources)
    take(data, 5)
    state = json.loads(json.dumps(data.state_dict()))  # survives a JSON checkpoint
    expected = take(data, 7)
    restored = loader(sources)
    restored.load_state_dict(state)
    for want, got in zip(expected, take(restored, 7)):
        assert all(torch.equal(a, b) for a, b in zip(want, got))
    same_again = take(loader(sources), 12)[5:]  # and a fresh loader is deterministic
    assert all(torch.equal(a, b) for want, got in zip(expected, same_again) for a, b in zip(want, got))


def test_ranks_take_disjoint_samples_that_make_up_the_global_batch(sources):
    single = take(loader(sources, batch_size=6), 3)
    ranks = [take(loader(sources, rank, 3, batch_size=2), 3) for rank in range(3)]
    for step in range(3):
        for i in range(3):
            joined = torch.cat([ranks[rank][step][i] for rank in range(3)])
            assert torch.equal(joined, single[step][i])
    rows = {tuple(r.tolist()) for rank in ranks for batch in rank for r in batch[0]}
    assert len(rows) == 3 * 3 * 2


def test_state_resumes_on_another_world_size(sources):
    data = loader(sources, batch_size=4)
    take(data, 3)
    state = data.state_dict()
    expected = take(data, 2)
    halves = []
    for rank in range(2):
        part = loader(sources, rank, 2, batch_size=2)
        part.load_state_dict(state)
        halves.append(take(part, 1)[0][0])
    assert torch.equal(torch.cat(halves), expected[0][0])


def test_realised_mix_follows_the_weights(sources):
    data = loader(sources, batch_size=16)
    take(data, 250)
    consumed = data.state_dict()["consumed"]
    total = sum(consumed.values())
    for name, weight in {"general": 0.5, "math": 0.3, "code": 0.2}.items():
        assert abs(consumed[name] / total - weight) < 0.02, (name, consumed)


def test_exhausted_source_reshuffles_for_the_next_epoch(sources):
    data = loader({"code": sources["code"]}, weights=None, batch_size=1)
    rows = data._rows[0]
    everything = sorted(tuple(rows.row(i)[0][:-1].tolist()) for i in range(rows.num_rows))
    epochs = [[tuple(next(data)[0][0].tolist()) for _ in range(rows.num_rows)] for _ in range(2)]
    assert sorted(epochs[0]) == everything and sorted(epochs[1]) == everything
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"weights": {"general": 0.5, "math": 0.5}}, "one weight per source"),
        ({"weights": {"general": 1.0, "math": 0.0, "code": 1.0}}, "must be positive"),
        ({"weights": {"general": 1.0, "math": float("nan"), "code": 1.0}}, "must be positive"),
        ({"weights": {"general": 1.0, "math": 1.0, "code": 1.0, "web": 1.0}}, "one weight per source"),
        ({"seq_len": 0}, "must be positive"),
        ({"seq_len": 100_000}, "too small for one row"),
    ],
)
def test_config_errors_name_the_problem(sources, overrides, message):
    with pytest.raises(HerdError, match=message):
        loader(sources, **overrides)


def test_empty_sources_are_refused():
    with pytest.raises(HerdError, match="data.sources is empty; name the token shards"):
        DataLoaderConfig(sources={})


def test_state_of_another_configuration_is_refused(sources):
    state = loader(sources).state_dict()
    with pytest.raises(HerdError, match="seq_len"):
        loader(sources, seq_len=8).load_state_dict(state)
    with pytest.raises(HerdError, match="rank 2 is outside world_size 2"):
        loader(sources, 2, 2)


def test_sources_from_different_tokenizers_are_refused(sources, corpus, tmp_path):
    other = train_tokenizer(corpus_texts(corpus[0][:1])[1], 300, tmp_path / "other.model", show_progress=False)
    tokenize_corpus(corpus[0][:1], other, tmp_path / "other", 1, show_progress=False)
    with pytest.raises(HerdError, match="different tokenizers"):
        loader({**sources, "other": tmp_path / "other"}, weights=None)
