"""Next-token choice from logits: greedy, temperature, top-k and top-p, seeded, without a device sync.

Also the per-token log-probabilities reported with a generation (under the model's raw distribution).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from herd.errors import HerdError


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen from the model's logits."""

    temperature: float = 0.0
    """0 picks the most likely token (greedy); above 0 samples from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Sample only among the most likely tokens whose probabilities sum to top_p (nucleus); 1 keeps all."""
    top_k: int = 0
    """Sample only among the top_k most likely tokens; 0 keeps all."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise HerdError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise HerdError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise HerdError(f"top_k must be >= 0 (0 keeps every token), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Next token ids [B] from logits [B, vocab].

    Sampling draws an exponential race (argmax of p / Exp(1) noise picks i with probability p_i) instead of
    torch.multinomial, so no step waits for the device; top-k works on torch.topk's k values only.
    """
    scores = logits.float()  # also for greedy: argmax over bf16 is several times slower on CPUs
    if params.greedy:
        return scores.argmax(dim=-1)
    scores = scores / params.temperature
    candidates = None
    if params.top_k:
        scores, candidates = scores.topk(min(params.top_k, scores.shape[-1]), dim=-1)
    if params.top_p < 1:
        scores = _nucleus(scores, params.top_p)
    probs = scores.softmax(dim=-1)
    noise = torch.empty_like(probs).exponential_(generator=generator)
    choice = (probs / noise).argmax(dim=-1)
    return choice if candidates is None else candidates.gather(-1, choice[:, None])[:, 0]


def _nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Scores with -inf outside the smallest set of top tokens whose probability reaches top_p."""
    ordered, order = scores.sort(dim=-1, descending=True)
    probs = ordered.softmax(dim=-1)
    # A token stays when the tokens ranked above it hold less than top_p, so the top token always stays.
    outside = probs.cumsum(dim=-1) - probs >= top_p
    dropped = outside.scatter(-1, order, outside)
    return scores.masked_fill(dropped, float("-inf"))


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) [B] under the model's raw distribution: log_softmax(logits) at temperature 1, unfiltered."""
    return logits.float().log_softmax(dim=-1).gather(-1, tokens[:, None])[:, 0]

