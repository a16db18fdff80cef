"""The tokenizer data stages count and read tokens with: one cached herd tokenizer per process.

None means Meta's 128K Llama 3 tokenizer that the llama-models package ships.
"""

from __future__ import annotations

from functools import lru_cache

from herd.tokenizer import Tokenizer, load_tokenizer


@lru_cache(maxsize=4)
def cached_tokenizer(path: str | None = None) -> Tokenizer:
    """The tokenizer at `path` (None: the default 128K one), loaded once per process."""
    return load_tokenizer(path)
