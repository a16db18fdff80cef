"""The decode step of generation: the next logits for one new token per row through the KV cache.

Eager it is the model's cached forward; compiled it is `Transformer.decode_step` under torch.compile, with
CUDA graphs on GPUs and, on CPUs, the inductor backend of `herd.model.cpu_tuning`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from herd.model import KVCache, Transformer
from herd.model.cpu_tuning import decode_backend

Step = Callable[[torch.Tensor], torch.Tensor]
"""ids [B, 1] -> next-token logits [B, vocab], appending the ids to the cache."""


def make_decode_step(model: Transformer, cache: KVCache, compile: bool) -> Step:
    """The step for `model` writing into `cache` (already prefilled), compiled or not."""
    if not compile:
        # Eager: the cached forward attends to the filled slots only.
        return lambda ids: model(ids, cache=cache)[:, -1]
    device = cache.pad.device
    compiled = _compiled_decode_step(device.type, decode_backend())
    slot = torch.tensor([cache.length], device=device)
    for tensor in cache.keys + cache.values:
        torch._dynamo.mark_dynamic(tensor, 2)  # one graph for every cache length, not one per prompt length
        if device.type == "cuda":
            torch._dynamo.mark_static_address(tensor)  # CUDA graphs write the cache where it is

    def step(ids: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()
        logits = compiled(model, ids, cache, slot)[:, -1]
        slot.add_(1)
        cache.length += 1
        return logits

    return step


@functools.cache
def _compiled_decode_step(device_type: str, backend: str | Callable) -> Callable[..., torch.Tensor]:
    """`Transformer.decode_step` compiled for a device type (on CPU with `backend`); dynamo keeps its graphs
    across calls and models."""
    if device_type == "cuda":
        return torch.compile(Transformer.decode_step, mode="reduce-overhead")
    return torch.compile(Transformer.decode_step, backend=backend)
