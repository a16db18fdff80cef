"""Token-distribution outlier filter: drops documents whose token unigram distribution is far (KL) from the corpus's.

Llama 3 (section 3.1.1) used a KL-divergence filter against the training distribution; this is a global stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from herd.data.document import Document
from herd.data.stage import GlobalStage, StageContext
from herd.data.tokens import cached_tokenizer


@dataclass
class TokenKLFilter(GlobalStage):
    """Drop documents with KL(doc tokens || corpus tokens) above `max_kl` nats.

    The corpus distribution is the (additively smoothed) token count over every document reaching this stage. A
    document's KL is `cross-entropy - entropy` of its token unigram distribution; typical English prose of a few
    hundred tokens scores 1-3 nats, token soup (hex dumps, boilerplate lists) scores far higher. Documents under
    `min_tokens` tokens are kept (their estimate is noise).
    """

    name: ClassVar[str] = "token_kl"
    max_kl: float = 4.0
    min_tokens: int = 100
    smoothing: float = 0.01
    """Pseudo-count added to every vocabulary entry of the corpus distribution."""
    tokenizer: str | None = None
    """Tokenizer file; None: Meta's 128K Llama 3 tokenizer."""

    def index(self, docs: Iterable[Document]) -> np.ndarray:
        tokenizer = cached_tokenizer(self.tokenizer)
        counts = np.zeros(tokenizer.n_words, dtype=np.int64)
        for doc in docs:
            counts += np.bincount(tokenizer.encode(doc.text), minlength=len(counts))
        return counts

    def decide(self, shards: Sequence[np.ndarray]) -> list[Any]:
        total = np.sum(shards, axis=0) + self.smoothing
        log_q = np.log(total / total.sum())
        return [log_q] * len(shards)

    def process(self, docs: Iterator[Document], ctx: StageContext) -> Iterator[Document]:
        encode = cached_tokenizer(self.tokenizer).encode
        for doc in docs:
            ids = encode(doc.text)
            if len(ids) >= self.min_tokens:
                kl = token_kl(np.asarray(ids), self.decision)
                doc.metadata["token_kl"] = round(kl, 4)
                if kl > self.max_kl:
                    ctx.drop(doc, "token_kl_outlier")
                    continue
            yield doc


def token_kl(ids: np.ndarray, log_q: np.ndarray) -> float:
    """KL(p || q) in nats of the unigram distribution p of `ids` against log-probabilities `log_q`."""
    unique, counts = np.unique(ids, return_counts=True)
    p = counts / counts.sum()
    return float(np.sum(p * (np.log(p) - log_q[unique])))
