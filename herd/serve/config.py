"""The serving engine's configuration: KV-cache capacity and how requests are batched into steps."""

from __future__ import annotations

from dataclasses import dataclass

from herd.errors import HerdError


@dataclass(frozen=True)
class EngineConfig:
    """Capacity and batching of the serving engine."""

    block_size: int = 16
    """Tokens per KV-cache block."""
    kv_tokens: int = 65536
    """KV-cache capacity in tokens, over all requests (capped at max_running full contexts)."""
    max_running: int = 32
    """Most requests decoding together; the rest wait."""
    max_step_tokens: int = 256
    """Token budget of one step (decodes plus prefill chunks): long prompts are prefilled in chunks of at most
    this, so they never stall running decodes for long."""
    prefix_caching: bool = True
    """Reuse the cached blocks of a prompt prefix already seen."""
    compile: bool | None = False
    """Run a step of one request's decode compiled (herd.serve.compiled_step), compiling when the engine starts;
    None (auto): where it pays (`choose_serve_path`). `herd serve` asks for auto."""

    def __post_init__(self) -> None:
        for name in ("block_size", "kv_tokens", "max_running"):
            if getattr(self, name) < 1:
                raise HerdError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_step_tokens < self.max_running:
            raise HerdError(
                f"max_step_tokens ({self.max_step_tokens}) must be at least max_running ({self.max_running}) "
                "so every running request decodes each step; raise max_step_tokens"
            )
