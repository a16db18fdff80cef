"""Named model configurations: Meta's published Llama 3 sizes and small presets for CPU work.

Each preset is a function returning a `ModelConfig`; derived presets copy and edit a base.
"""

from __future__ import annotations

from collections.abc import Callable

from herd.errors import HerdError
from herd.model.config import ModelConfig, RopeScaling


def llama3_8b() -> ModelConfig:
    """Llama 3 8B (April 2024 release), 8K context."""
    return ModelConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, multiple_of=1024, ffn_dim_multiplier=1.3)


def llama3_70b() -> ModelConfig:
    """Llama 3 70B, 8K context."""
    return ModelConfig(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096, ffn_dim_multiplier=1.3)


def llama3_1_8b() -> ModelConfig:
    """Llama 3.1 8B: 3.0's shape with llama3 RoPE scaling and 128K context."""
    return llama3_8b().replace(rope_scaling=RopeScaling(), max_seq_len=131072)


def llama3_1_70b() -> ModelConfig:
    """Llama 3.1 / 3.3 70B."""
    return llama3_70b().replace(rope_scaling=RopeScaling(), max_seq_len=131072)


def llama3_1_405b() -> ModelConfig:
    """Llama 3.1 405B."""
    return ModelConfig(
        dim=16384, n_layers=126, n_heads=128, n_kv_heads=8, multiple_of=4096, ffn_dim_multiplier=1.2,
        rope_scaling=RopeScaling(), max_seq_len=131072,
    )


def llama3_2_1b() -> ModelConfig:
    """Llama 3.2 1B: tied embeddings, RoPE scaling factor 32."""
    return ModelConfig(
        dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, multiple_of=256, ffn_dim_multiplier=1.5,
        rope_scaling=RopeScaling(factor=32.0), max_seq_len=131072, tie_word_embeddings=True,
    )


def llama3_2_3b() -> ModelConfig:
    """Llama 3.2 3B: tied embeddings, RoPE scaling factor 32."""
    return llama3_2_1b().replace(dim=3072, n_layers=28, n_heads=24, ffn_dim_multiplier=1.0)


def llama3_125m() -> ModelConfig:
    """A ~125M-parameter Llama 3 (128K vocab, tied head): the CPU benchmark model."""
    return ModelConfig(
        dim=576, n_layers=14, n_heads=9, n_kv_heads=3, multiple_of=256, ffn_dim_multiplier=None,
        max_seq_len=2048, tie_word_embeddings=True,
    )


def tiny() -> ModelConfig:
    """A few-million-parameter model on Meta's 128K vocabulary, for tests and smoke runs."""
    return ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, ffn_dim_multiplier=None, max_seq_len=1024,
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "llama3-8b": llama3_8b,
    "llama3-70b": llama3_70b,
    "llama3.1-8b": llama3_1_8b,
    "llama3.1-70b": llama3_1_70b,
    "llama3.1-405b": llama3_1_405b,
    "llama3.2-1b": llama3_2_1b,
    "llama3.2-3b": llama3_2_3b,
    "llama3.3-70b": llama3_1_70b,
    "llama3-125m": llama3_125m,
    "tiny": tiny,
}


def preset(name: str) -> ModelConfig:
    """The config of a named preset."""
    if name not in PRESETS:
        raise HerdError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
