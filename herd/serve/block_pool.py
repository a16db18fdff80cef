"""The bookkeeping of the paged KV cache: fixed-size blocks, reference counts and the prefix cache.

A full block is known by a chained hash of every token up to its end, so requests whose prompts share a
prefix share its blocks; blocks nobody references keep their contents until a new allocation evicts them (LRU).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Sequence

import numpy as np

BlockHash = bytes


def block_hashes(tokens: Sequence[int], block_size: int, parent: BlockHash = b"") -> list[BlockHash]:
    """Chained hashes of the full blocks of `tokens`: each one covers its block and every block before it."""
    hashes = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        block = np.asarray(tokens[start : start + block_size], dtype=np.int64).tobytes()
        parent = hashlib.blake2b(parent + block, digest_size=16).digest()
        hashes.append(parent)
    return hashes


class BlockPool:
    """Allocates block ids; a block is in use (ref > 0), cached (ref 0, hashed, evictable) or free."""

    def __init__(self, num_blocks: int, prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.prefix_caching = prefix_caching
        self._refs = [0] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._by_hash: dict[BlockHash, int] = {}
        self._hash_of: dict[int, BlockHash] = {}

    @property
    def num_available(self) -> int:
        """Blocks an allocation can take now (free plus evictable cached ones)."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_available

    def allocate(self) -> int:
        """A block for new contents, ref 1; evicts the least recently released cached block if none is free."""
        if self._free:
            block = self._free.popleft()
        else:
            block, _ = self._evictable.popitem(last=False)
            del self._by_hash[self._hash_of.pop(block)]
        self._refs[block] = 1
        return block

    def release(self, block: int) -> None:
        self._refs[block] -= 1
        assert self._refs[block] >= 0, f"block {block} released more often than taken"
        if self._refs[block] == 0:
            if block in self._hash_of:
                self._evictable[block] = None
            else:
                self._free.append(block)

    def lookup(self, hashes: Sequence[BlockHash]) -> list[int]:
        """Blocks holding the longest cached run of `hashes` from the start, each taken (ref + 1)."""
        found = []
        for block_hash in hashes if self.prefix_caching else ():
            block = self._by_hash.get(block_hash)
            if block is None:
                break
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1
            found.append(block)
        return found

    def register(self, block: int, block_hash: BlockHash) -> None:
        """Record that the full `block` holds the tokens `block_hash` names (first holder of a hash wins)."""
        if self.prefix_caching and block_hash not in self._by_hash and block not in self._hash_of:
            self._by_hash[block_hash] = block
            self._hash_of[block] = block_hash
