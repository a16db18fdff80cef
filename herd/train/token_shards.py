"""Token shards: a corpus tokenized in parallel into memmap-able binary shards with document offsets.

Owns the on-disk format (writer `tokenize_corpus`, reader `TokenShards`) and its JSON manifest.
"""

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from herd.data.readers import corpus_texts
from herd.errors import HerdError
from herd.run_dir import atomic_open, write_json
from herd.tokenizer import Tokenizer, load_tokenizer

MANIFEST_NAME = "manifest.json"
FORMAT = "herd-token-shards-1"
DEFAULT_SHARD_CHARS = 1 << 28  # ~270M characters: ~60M tokens, a few hundred MB per shard
CHUNK_CHARS = 1 << 20  # characters per task sent to a worker


@dataclass(frozen=True)
class ShardInfo:
    """One completed shard: its file stem and counts."""

    name: str
    num_docs: int
    num_tokens: int


@dataclass
class TokenManifest:
    """What a token-shard directory holds; `complete` turns true once every shard is written."""

    tokenizer_path: str
    tokenizer_sha256: str
    n_words: int
    bos_id: int
    eos_id: int
    dtype: str
    inputs: list[dict]  # [{"path": ..., "bytes": ...}] in reading order
    shard_chars: int
    shards: list[ShardInfo] = field(default_factory=list)
    complete: bool = False
    format: str = FORMAT

    @property
    def num_docs(self) -> int:
        return sum(shard.num_docs for shard in self.shards)

    @property
    def num_tokens(self) -> int:
        return sum(shard.num_tokens for shard in self.shards)

    def same_job(self, other: "TokenManifest") -> bool:
        """Whether both describe the same inputs, tokenizer and sharding (whatever their progress)."""
        return dataclasses.replace(self, shards=[], complete=False) == dataclasses.replace(
            other, shards=[], complete=False
        )

    def save(self, directory: Path) -> None:
        write_json(directory / MANIFEST_NAME, dataclasses.asdict(self), indent=1)

    @classmethod
    def load(cls, directory: str | Path) -> "TokenManifest":
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise HerdError(f"no {MANIFEST_NAME} in {directory}; tokenize a corpus there first (herd tokenize)")
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT:
            raise HerdError(f"{path} is not a herd token-shard manifest ({FORMAT}); re-tokenize the corpus")
        record["shards"] = [ShardInfo(**shard) for shard in record["shards"]]
        return cls(**record)


def token_dtype(n_words: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of an `n_words` vocabulary: uint16 or uint32."""
    return np.dtype(np.uint16 if n_words <= 1 << 16 else np.uint32)


def tokenize_corpus(
    inputs: Sequence[str | Path],
    tokenizer: str | Path | None,
    out_dir: str | Path,
    num_workers: int | None = None,
    *,
    shard_chars: int = DEFAULT_SHARD_CHARS,
    show_progress: bool = True,
) -> TokenManifest:
    """Tokenize corpus files/directories into token shards in `out_dir` with `num_workers` processes.

    `tokenizer`: a BPE file or a model directory holding one; None is Meta's 128K tokenizer.
    `num_workers` (default: all cores) changes speed only: documents go to shards in input order,
    a shard closing once it holds `shard_chars` characters, so the shards are byte-identical for
    any count. Shards already marked done are kept, so an interrupted run resumes where it
    stopped; a directory holding another job's shards is refused. `out_dir` then holds:
    - `shard_00000.bin`: the documents' token ids back to back, raw (no BOS/EOS: packing adds them,
      so one tokenization serves any packing), uint16 when the vocabulary fits, else uint32;
    - `shard_00000.idx.npy`: int64 offsets [num_docs + 1]; document i is tokens offsets[i]:offsets[i+1];
    - `shard_00000.done`: the completion marker;
    - `manifest.json`: tokenizer path, SHA-256 and special ids, dtype, inputs, per-shard counts.
    """
    if shard_chars < 1:
        raise HerdError(f"shard_chars must be positive, got {shard_chars}")
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    if num_workers < 1:
        raise HerdError(f"num_workers must be at least 1, got {num_workers}")
    files, texts = corpus_texts(inputs)
    tok = load_tokenizer(tokenizer)
    out = Path(out_dir)
    manifest = _new_manifest(tok, files, shard_chars)
    previous = TokenManifest.load(out) if (out / MANIFEST_NAME).is_file() else None
    if previous is not None:
        if not previous.same_job(manifest):
            raise HerdError(f"{out} holds token shards of other inputs, tokenizer or shard size; pass an empty out_dir")
        if previous.complete:
            return previous
    out.mkdir(parents=True, exist_ok=True)
    manifest.save(out)
    with _executor(num_workers) as executor, tqdm(desc="tokenize", unit="doc", disable=not show_progress) as bar:
        for index, docs in enumerate(_batches(texts, shard_chars)):
            name = f"shard_{index:05d}"
            done = out / f"{name}.done"
            if done.is_file():
                manifest.shards.append(ShardInfo(**json.loads(done.read_text())))
                bar.update(len(docs))
                continue
            chunks = _batches(docs, CHUNK_CHARS)
            if executor is None:
                results = map(partial(_encode, tok, manifest.dtype), chunks)
            else:
                results = executor.map(partial(_encode_in_worker, manifest.tokenizer_path, manifest.dtype), chunks)
            manifest.shards.append(_write_shard(out, name, results, bar))
            write_json(done, dataclasses.asdict(manifest.shards[-1]))
    manifest.complete = True
    manifest.save(out)
    return manifest


class TokenShards:
    """A token-shard directory opened for reading: documents' lengths and their concatenated tokens."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.manifest = TokenManifest.load(self.directory)
        if not self.manifest.complete:
            raise HerdError(f"token shards in {self.directory} are incomplete; rerun herd tokenize to finish them")
        self._tokens = [self._open(shard) for shard in self.manifest.shards]
        offsets = [np.load(self.directory / f"{shard.name}.idx.npy") for shard in self.manifest.shards]
        self.doc_lengths: np.ndarray = np.concatenate([np.diff(o) for o in offsets] or [np.zeros(0, np.int64)])
        self._starts = np.cumsum([0] + [shard.num_tokens for shard in self.manifest.shards])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens start..stop (int64) of all documents laid end to end, in corpus order, without BOS/EOS."""
        assert 0 <= start <= stop <= self._starts[-1], (start, stop)
        parts = []
        shard = int(np.searchsorted(self._starts, start, side="right")) - 1
        while start < stop:
            end = min(stop, int(self._starts[shard + 1]))
            parts.append(self._tokens[shard][start - self._starts[shard] : end - self._starts[shard]])
            start, shard = end, shard + 1
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def _open(self, shard: ShardInfo) -> np.memmap:
        path = self.directory / f"{shard.name}.bin"
        dtype = np.dtype(self.manifest.dtype)
        if not path.is_file() or path.stat().st_size != shard.num_tokens * dtype.itemsize:
            raise HerdError(
                f"{path} is missing or truncated; delete it and {shard.name}.done, then rerun herd tokenize"
            )
        return np.memmap(path, dtype=dtype, mode="r")


def _new_manifest(tok: Tokenizer, files: list[Path], shard_chars: int) -> TokenManifest:
    return TokenManifest(
        tokenizer_path=str(tok.path.resolve()),
        tokenizer_sha256=hashlib.sha256(tok.path.read_bytes()).hexdigest(),
        n_words=tok.n_words,
        bos_id=tok.bos_id,
        eos_id=tok.eos_id,
        dtype=token_dtype(tok.n_words).name,
        inputs=[{"path": str(path.resolve()), "bytes": path.stat().st_size} for path in files],
        shard_chars=shard_chars,
    )


def _batches(docs: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    """Consecutive groups of documents, each closed once it reaches `max_chars` characters."""
    batch: list[str] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _executor(num_workers: int) -> AbstractContextManager[Executor | None]:
    """Worker processes (the platform's default start method), or None to encode in this process."""
    if num_workers == 1:
        return nullcontext()
    return ProcessPoolExecutor(num_workers)


@lru_cache(maxsize=2)
def _cached_tokenizer(path: str) -> Tokenizer:
    return Tokenizer(path)


def _encode_in_worker(tokenizer_path: str, dtype: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`_encode` in a worker process, which loads the tokenizer once."""
    return _encode(_cached_tokenizer(tokenizer_path), dtype, texts)


def _encode(tok: Tokenizer, dtype: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `texts` back to back, and each text's length in tokens."""
    ids = [tok.encode(text) for text in texts]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
    return tokens, lengths


def _write_shard(out: Path, name: str, results: Iterable[tuple[np.ndarray, np.ndarray]], bar: tqdm) -> ShardInfo:
    """Write one shard's tokens and offsets from its encoded chunks, in order; files appear atomically."""
    all_lengths = []
    with atomic_open(out / f"{name}.bin", "wb") as f:
        for tokens, lengths in results:
            tokens.tofile(f)
            all_lengths.append(lengths)
            bar.update(len(lengths))
    lengths = np.concatenate(all_lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with atomic_open(out / f"{name}.idx.npy", "wb") as f:
        np.save(f, offsets)
    return ShardInfo(name=name, num_docs=len(lengths), num_tokens=int(offsets[-1]))
