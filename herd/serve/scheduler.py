"""Continuous batching: which sequences run this step and how many of their tokens, within a token budget.

Decodes go first (one token each), then prefill chunks of running sequences, then newly admitted requests
(prompt blocks taken from the prefix cache where possible). When a decode needs a block and none is left, the
newest running sequence is preempted: its blocks are freed and it is recomputed later from its tokens.
"""

from __future__ import annotations

from collections import deque

from herd.serve.block_pool import BlockPool, block_hashes
from herd.serve.config import EngineConfig
from herd.serve.request import Sequence


class Scheduler:
    """Owns the waiting queue, the running batch and the block pool."""

    def __init__(self, config: EngineConfig, num_blocks: int) -> None:
        self.config = config
        self.pool = BlockPool(num_blocks, config.prefix_caching)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.cached_tokens = 0
        """Prompt tokens taken from the prefix cache instead of computed, since the start."""
        self.preemptions = 0
        """Sequences sent back to the queue for want of blocks, since the start."""

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Drop a finished or cancelled sequence and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self._free(seq)

    def schedule(self) -> list[tuple[Sequence, int]]:
        """This step's work: (sequence, number of its pending tokens to compute), decodes first."""
        plan: list[tuple[Sequence, int]] = []
        for seq in [s for s in self.running if s.pending == 1]:
            if seq in self.running and self._grow(seq):
                plan.append((seq, 1))
        budget = self.config.max_step_tokens - len(plan)
        for seq in [s for s in self.running if s.pending > 1]:
            if budget > 0:
                plan.append((seq, min(seq.pending, budget)))
                budget -= plan[-1][1]
        while budget > 0 and self.waiting and len(self.running) < self.config.max_running and self._admit():
            seq = self.running[-1]
            plan.append((seq, min(seq.pending, budget)))
            budget -= plan[-1][1]
        return plan

    def computed(self, seq: Sequence, count: int) -> None:
        """Record that `count` more tokens of `seq` are in the cache; newly full blocks join the prefix cache."""
        seq.num_computed += count
        size = self.config.block_size
        known = len(seq.hashes)
        parent = seq.hashes[-1] if seq.hashes else b""
        new = block_hashes(seq.tokens[known * size : seq.num_computed], size, parent)
        for block, block_hash in zip(seq.blocks[known:], new, strict=False):
            self.pool.register(block, block_hash)
        seq.hashes += new

    def _admit(self) -> bool:
        """Move the first waiting sequence into the batch with blocks for all its tokens, if they fit."""
        seq, size = self.waiting[0], self.config.block_size
        hashes = block_hashes(seq.tokens[:-1], size)  # at least one token is computed, for the logits
        cached = self.pool.lookup(hashes)
        needed = -(-len(seq.tokens) // size) - len(cached)
        if needed > self.pool.num_available:
            for block in cached:
                self.pool.release(block)
            return False
        seq.blocks = cached + [self.pool.allocate() for _ in range(needed)]
        seq.hashes = hashes[: len(cached)]
        seq.num_computed = len(cached) * size
        self.cached_tokens += seq.num_computed
        self.running.append(self.waiting.popleft())
        return True

    def _grow(self, seq: Sequence) -> bool:
        """Give a decoding `seq` room for one more token, preempting the newest sequences if needed; False if
        `seq` itself had to go."""
        if seq.num_computed < len(seq.blocks) * self.config.block_size:
            return True
        while self.pool.num_available == 0:
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        seq.blocks.append(self.pool.allocate())
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.preemptions += 1
        self.running.remove(seq)
        self._free(seq)
        self.waiting.appendleft(seq)

    def _free(self, seq: Sequence) -> None:
        for block in seq.blocks:
            self.pool.release(block)
        seq.blocks, seq.hashes, seq.num_computed = [], [], 0
