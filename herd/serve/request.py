"""What the engine knows of one request: its sampling parameters, its running state, and what each step emits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from herd.errors import HerdError
from herd.generation import SamplingParams, TextStream
from herd.serve.block_pool import BlockHash

if TYPE_CHECKING:
    from llguidance import LLMatcher

    from herd.serve.grammar import Grammar

FinishReason = Literal["stop", "length", "abort"]
MAX_SEED = 2**64 - 1
"""The largest seed torch's generators take."""


@dataclass(frozen=True)
class RequestParams:
    """How one request is continued."""

    max_tokens: int
    """Most new tokens to generate."""
    temperature: float = 0.0
    """0 is greedy; above 0 samples from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1 keeps every token."""
    top_k: int = 0
    """Sample among the k most likely tokens only; 0 keeps every token."""
    seed: int | None = None
    """Seed of this request's own generator, 0..MAX_SEED (None: a random one), so its samples never depend on its
    batch."""
    stop: tuple[str, ...] = ()
    """Strings that end the generation; they are cut from the text."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end the generation besides the tokenizer's own stop tokens (always honoured)."""
    logprobs: bool = False
    """Report log p of each new token (under the model's raw distribution)."""
    top_logprobs: int = 0
    """Also report the this-many most likely tokens at each step, with their log p."""
    grammar: Grammar | None = None
    """The output must follow this grammar (herd.serve.grammar): only tokens it allows are sampled, a stop token
    only where it accepts, and the request ends once it is complete."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise HerdError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0 <= self.top_logprobs <= 20:
            raise HerdError(f"top_logprobs must be between 0 and 20, got {self.top_logprobs}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise HerdError(f"seed must be between 0 and 2^64-1, got {self.seed}")
        if any(not s for s in self.stop):
            raise HerdError("stop strings must be non-empty; remove the empty string from stop")
        self.sampling  # noqa: B018 - validates temperature, top_p and top_k

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.top_k)


@dataclass
class StepOutput:
    """What one step produced for one request: a new token (with its text) and/or the end of the request."""

    request_id: str
    token_id: int | None
    """The new token; None when the request ended without one (a stop token, which is never emitted)."""
    text: str
    """Text now safe to show (may be empty while a character or a possible stop string is held back)."""
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: FinishReason | None = None


@dataclass
class Sequence:
    """A request inside the engine: its tokens so far and where their keys/values live."""

    request_id: str
    params: RequestParams
    tokens: list[int]
    """Prompt then generated ids; the last one's keys/values are computed on the next step."""
    prompt_len: int
    stream: TextStream
    generator: torch.Generator | None
    num_computed: int = 0
    """Leading tokens whose keys/values are in the cache."""
    blocks: list[int] = field(default_factory=list)
    hashes: list[BlockHash] = field(default_factory=list)
    """Hashes of the leading full blocks, as far as they are known."""
    matcher: LLMatcher | None = None
    """Where the generated tokens stand in `params.grammar`, for constrained requests."""

    @classmethod
    def create(
        cls, request_id: str, prompt: list[int], params: RequestParams, stream: TextStream, device: torch.device
    ) -> Sequence:
        generator = None
        if not params.sampling.greedy:
            seed = secrets.randbits(63) if params.seed is None else params.seed
            generator = torch.Generator(device=device).manual_seed(seed)
        matcher = None if params.grammar is None else params.grammar.matcher()
        return cls(request_id, params, list(prompt), len(prompt), stream, generator, matcher=matcher)

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def pending(self) -> int:
        """Tokens whose keys/values are still to compute (1 while decoding, more during a prefill)."""
        return len(self.tokens) - self.num_computed
