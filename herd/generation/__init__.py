"""Text generation: sampling, the KV-cache decoding loop on token ids, and the text API `generate`.

`generate_tokens` works on ids; `generate` / `generate_results` encode, stream, stop and decode text.
"""

from herd.generation.generate import GenerationResult, generate, generate_results, generate_tokens
from herd.generation.sampling import SamplingParams, sample, token_logprobs
from herd.generation.stopping import TextStream

__all__ = [
    "GenerationResult",
    "SamplingParams",
    "TextStream",
    "generate",
    "generate_results",
    "generate_tokens",
    "sample",
    "token_logprobs",
]
