"""The pretraining data loader: packed rows from several token sources mixed by weight, per rank.

Deterministic and resumable to the exact next sample; the state is one cursor, the same on every rank.
"""

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from herd.errors import HerdError
from herd.train.packing import PackedRows, shift, split_rows
from herd.train.token_shards import TokenShards

CHOICE_BLOCK = 4096  # samples whose sources are drawn by one generator


@dataclass
class DataLoaderConfig:
    """Token sources, their mix and the batch shape."""

    sources: dict[str, str | Path]
    """Source name -> token-shard directory written by `herd tokenize`."""
    weights: dict[str, float] | None = None
    """Source name -> sampling weight (normalized to sum 1); None samples in proportion to source size."""
    batch_size: int = 8
    """Rows per rank per step."""
    seq_len: int = 2048
    """Tokens per row (inputs and targets each)."""
    seed: int = 0
    """Seeds the source draws and every epoch's shuffle."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise HerdError("data.sources is empty; name the token shards to train on (directories written by "
                            "herd tokenize), e.g. data.sources.web=shards/web")
        if self.batch_size < 1 or self.seq_len < 1:
            raise HerdError(f"batch_size and seq_len must be positive, got {self.batch_size} and {self.seq_len}")
        if self.weights is None:
            return
        if set(self.weights) != set(self.sources):
            raise HerdError(
                f"weights name {sorted(self.weights)} but sources are {sorted(self.sources)}; "
                "give one weight per source, same names"
            )
        bad = {name: w for name, w in self.weights.items() if not (math.isfinite(w) and w > 0)}
        if bad:
            raise HerdError(f"weights must be positive numbers, got {bad}")


class TokenDataLoader:
    """Endless (tokens, targets, doc_ids) LongTensor batches [batch_size, seq_len] for one rank.

    Sample g of the global stream (all ranks together) comes from a source drawn with the mix
    weights by a generator seeded with (seed, g // CHOICE_BLOCK), and is that source's next row in
    its epoch order: its k-th row overall is row perm[k % rows] of epoch k // rows, perm seeded with
    (seed, source name, epoch), so a source reshuffles whenever it is exhausted. A step takes
    batch_size * world_size consecutive samples and rank r keeps the r-th batch_size of them: ranks
    never share a sample, and a state saved on any rank resumes on any world size or batch size.
    """

    def __init__(self, config: DataLoaderConfig, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise HerdError(f"rank {rank} is outside world_size {world_size}; need 0 <= rank < world_size")
        self.config, self.rank, self.world_size = config, rank, world_size
        self.names = sorted(config.sources)
        shards = {name: TokenShards(config.sources[name]) for name in self.names}
        self.n_words, self.bos_id, self.eos_id = _common_tokenizer(shards)
        self._rows = [
            PackedRows(s.doc_lengths, s.read, config.seq_len, self.bos_id, self.eos_id)
            for s in (shards[name] for name in self.names)
        ]
        for name, rows in zip(self.names, self._rows):
            if rows.num_rows == 0:
                raise HerdError(
                    f"source {name!r} is too small for one row of seq_len {config.seq_len}; add data or lower seq_len"
                )
        weights = config.weights or {name: rows.num_rows for name, rows in zip(self.names, self._rows)}
        self.weights = np.array([weights[name] for name in self.names], dtype=np.float64)
        self.weights /= self.weights.sum()
        self._sample = 0
        self._parts = 1
        self._consumed = np.zeros(len(self.names), dtype=np.int64)
        self._choice_cache: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, step = self.config.batch_size, self.config.batch_size * self.world_size
        sources = self._sources(self._sample, step)
        index = np.empty(step, dtype=np.int64)  # each sample's position in its source's row stream
        for source in range(len(self.names)):
            mine = sources == source
            index[mine] = self._consumed[source] + np.arange(mine.sum())
        keep = slice(self.rank * batch, (self.rank + 1) * batch)
        rows = [self._row(int(s), int(k)) for s, k in zip(sources[keep], index[keep])]
        self._sample += step
        self._consumed += np.bincount(sources, minlength=len(self.names))
        tokens, doc_ids = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        batch = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in shift(tokens, doc_ids))
        return split_rows(batch, self._parts)

    def set_seq_len(self, seq_len: int) -> None:
        """Serve the next batches as rows of `seq_len`, a divisor of the configured seq_len: each row is cut into
        pieces (batch_size x seq_len / `seq_len` of them), so the data order and the resume state do not change."""
        if seq_len < 1 or self.config.seq_len % seq_len:
            raise HerdError(f"seq_len {seq_len} must divide the data loader's seq_len {self.config.seq_len}")
        self._parts = self.config.seq_len // seq_len

    def state_dict(self) -> dict:
        """The resume state: samples taken (all ranks) and rows taken per source, plus what must match."""
        return {
            "sample": self._sample,
            "consumed": dict(zip(self.names, self._consumed.tolist())),
            "weights": dict(zip(self.names, self.weights.tolist())),
            "seq_len": self.config.seq_len,
            "seed": self.config.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly after the last sample of a saved state; sources, weights, seq_len and seed must match."""
        mine = self.state_dict()
        for key in ("weights", "seq_len", "seed"):
            if state[key] != mine[key]:
                raise HerdError(
                    f"data loader state has {key}={state[key]!r} but this loader has {mine[key]!r}; "
                    f"resume with the same {key}"
                )
        self._sample = int(state["sample"])
        self._consumed = np.array([state["consumed"][name] for name in self.names], dtype=np.int64)

    def _sources(self, start: int, count: int) -> np.ndarray:
        """Source index of global samples start .. start + count, drawn by mix weight."""
        blocks = range(start // CHOICE_BLOCK, (start + count - 1) // CHOICE_BLOCK + 1)
        drawn = np.concatenate([self._source_block(block) for block in blocks])
        offset = start - blocks[0] * CHOICE_BLOCK
        return drawn[offset : offset + count]

    def _source_block(self, block: int) -> np.ndarray:
        if self._choice_cache[0] != block:
            rng = np.random.default_rng([self.config.seed, block])
            self._choice_cache = (block, rng.choice(len(self.names), size=CHOICE_BLOCK, p=self.weights))
        return self._choice_cache[1]

    def _row(self, source: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows[source]
        epoch, position = divmod(index, rows.num_rows)
        cached_epoch, perm = self._perm_cache.get(source, (-1, None))
        if cached_epoch != epoch:
            key = zlib.crc32(self.names[source].encode())
            perm = np.random.default_rng([self.config.seed, key, epoch]).permutation(rows.num_rows)
            self._perm_cache[source] = (epoch, perm)
        return rows.row(int(perm[position]))


def _common_tokenizer(shards: dict[str, TokenShards]) -> tuple[int, int, int]:
    """(n_words, bos_id, eos_id) shared by all sources; sources from different tokenizers are refused."""
    by_hash = {s.manifest.tokenizer_sha256: name for name, s in shards.items()}
    if len(by_hash) > 1:
        names = sorted(by_hash.values())
        raise HerdError(
            f"sources {names[0]!r} and {names[1]!r} were tokenized with different tokenizers; "
            "tokenize all sources with one tokenizer"
        )
    manifest = next(iter(shards.values())).manifest
    return manifest.n_words, manifest.bos_id, manifest.eos_id
