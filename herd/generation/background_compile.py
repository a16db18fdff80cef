"""A chat session's compiled decode step, built in a background thread while its replies decode eagerly.

A compile costs seconds of tracing even with inductor's kernels cached (llama3-125m on 2 cores: ~7.8 s, a 256-token
reply's worth), so a chat that compiled first would answer its first message later than an eager one. Here the
step decodes eagerly until the compiled one is ready, then switches to it between two tokens: no reply waits for the
compile. The thread traces under inference mode, as generation runs, so the switch finds the graph built (its
guards pass) and compiles nothing in the foreground; greedy tokens are those of either path.

The compile takes a core and the interpreter's lock for its tracing. Where torch's threads leave no core spare it
starts once the first reply is done, while the user reads it and types (llama3-125m, 2 cores under load: each eager
step ~1.7x slower during a compile beside it, the compile ~3x slower); with a spare core, at the first reply's first
decode step.
"""

from __future__ import annotations

import threading

import torch

from herd.generation.decode_step import Step, make_decode_step, spare_core
from herd.model import KVCache, Transformer

WARM_UP_SLOTS = 512
"""Cache length the background compile traces with (the graph is dynamic in it; inductor tunes to this size)."""


class BackgroundCompile:
    """The compiled one-row decode step of `model`, compiled by a thread started at the first decode step
    (`early`, default: where a core is spare) or by `start()`; `step(cache)` runs eagerly until it is ready."""

    def __init__(self, model: Transformer, early: bool | None = None) -> None:
        self.model, self.early = model, spare_core() if early is None else early
        self.ready = threading.Event()
        """Set when the compile ended, whether it built the step (`error` None) or failed."""
        self.error: Exception | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the compile (once; later calls do nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._compile, name="herd-compile", daemon=True)
            self._thread.start()

    def step(self, cache: KVCache) -> Step:
        """The decode step writing into `cache` (prefilled): eager until the compiled step is ready, then compiled;
        eager throughout for a cache of several rows."""
        eager = make_decode_step(self.model, cache, False)
        if cache.keys[0].shape[0] != 1:
            return eager
        if self.early:
            self.start()
        current = [eager]

        def step(ids: torch.Tensor) -> torch.Tensor:
            if current[0] is eager and self.ready.is_set() and self.error is None:
                current[0] = make_decode_step(self.model, cache, True)
            return current[0](ids)

        return step

    def _compile(self) -> None:
        try:
            weight, config = self.model.tok_embeddings.weight, self.model.config
            with torch.inference_mode():
                cache = KVCache.allocate(config, 1, min(WARM_UP_SLOTS, config.max_seq_len), dtype=weight.dtype,
                                         device=weight.device, kv_heads=self.model.kv_heads)
                make_decode_step(self.model, cache, True)(torch.zeros(1, 1, dtype=torch.long, device=weight.device))
        except Exception as error:  # noqa: BLE001 - the session decodes on eagerly; the error is kept for the caller
            self.error = error
        finally:
            self.ready.set()
