"""Model configuration: the typed hyper-parameters of a Llama 3 transformer.

Field names follow Meta's `params.json` so a checkpoint's config reads in without renaming.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herd.errors import HerdError


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1's "llama3" RoPE frequency scaling (long-context extension)."""

    factor: float = 8.0
    """How much the context was stretched; low frequencies are divided by this."""
    low_freq_factor: float = 1.0
    """Wavelengths above original_max_position / low_freq_factor are fully scaled."""
    high_freq_factor: float = 4.0
    """Wavelengths below original_max_position / high_freq_factor are left as they are."""
    original_max_position_embeddings: int = 8192
    """The context length the model was pretrained with before the extension."""

    def __post_init__(self) -> None:
        check_field_types(self, "model config: rope_scaling.")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Llama 3 decoder-only transformer."""

    dim: int = 4096
    """Width of the residual stream."""
    n_layers: int = 32
    """Number of transformer blocks."""
    n_heads: int = 32
    """Number of query heads; head_dim = dim / n_heads."""
    n_kv_heads: int | None = 8
    """Number of key/value heads (grouped-query attention); None means n_heads."""
    vocab_size: int = 128256
    """Rows of the embedding and of the output head."""
    multiple_of: int = 1024
    """The SwiGLU hidden size is rounded up to a multiple of this."""
    ffn_dim_multiplier: float | None = 1.3
    """Scales the SwiGLU hidden size int(2 * 4 * dim / 3) before rounding."""
    norm_eps: float = 1e-5
    """Epsilon of every RMSNorm."""
    rope_theta: float = 500000.0
    """Base of the rotary position frequencies."""
    rope_scaling: RopeScaling | None = None
    """Llama 3.1+ frequency scaling, or None for Llama 3.0."""
    max_seq_len: int = 8192
    """Longest sequence (prompt + generation) the model accepts."""
    tie_word_embeddings: bool = False
    """Output head shares the token-embedding matrix (Llama 3.2 1B/3B)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Unrecognised params.json keys, kept so a round trip loses nothing."""

    def __post_init__(self) -> None:
        check_field_types(self, "model config: ")
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise HerdError(f"model config: {name} must be positive, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise HerdError(f"model config: dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise HerdError(
                f"model config: n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}"
            )
        if (self.dim // self.n_heads) % 2:
            raise HerdError(f"model config: head_dim={self.dim // self.n_heads} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """SwiGLU hidden size exactly as Meta's reference computes it."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def num_params(self) -> int:
        """Parameter count (the tied head counted once)."""
        d, h, kv = self.dim, self.head_dim, self.kv_heads
        attn = d * self.n_heads * h * 2 + d * kv * h * 2
        ffn = 3 * d * self.ffn_hidden_dim
        block = attn + ffn + 2 * d
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.n_layers * block + d + head

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (presets derive from a base this way)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise HerdError(f"model config: unknown field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    # --- params.json -----------------------------------------------------------------
    def to_params(self) -> dict[str, Any]:
        """Meta's params.json dictionary."""
        params: dict[str, Any] = dict(self.extra)
        params.update(
            dim=self.dim,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            vocab_size=self.vocab_size,
            multiple_of=self.multiple_of,
            ffn_dim_multiplier=self.ffn_dim_multiplier,
            norm_eps=self.norm_eps,
            rope_theta=self.rope_theta,
            use_scaled_rope=self.rope_scaling is not None,
            max_seq_len=self.max_seq_len,
            tie_word_embeddings=self.tie_word_embeddings,
        )
        if self.rope_scaling is not None:
            params["rope_scaling"] = dataclasses.asdict(self.rope_scaling)
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ModelConfig:
        """Read Meta's params.json (3.0 through 3.3 variants) or herd's own config."""
        params = dict(params)
        known = {f.name for f in dataclasses.fields(cls)} - {"rope_scaling", "extra"}
        kwargs = {k: params.pop(k) for k in list(params) if k in known}
        use_scaled = params.pop("use_scaled_rope", False)
        scaling = params.pop("rope_scaling", None)
        check_type("model config: rope_scaling", scaling, dict[str, Any] | None)
        if use_scaled or scaling:
            # Meta's params.json says only use_scaled_rope (its reference code fixes factor 8);
            # later ones may name the factor (rope_scaling_factor), HF-derived configs give all of it.
            scaling = dict(scaling or {})
            if "rope_scaling_factor" in params:
                scaling["factor"] = params.pop("rope_scaling_factor")
            scaling.pop("rope_type", None)
            kwargs["rope_scaling"] = RopeScaling(**scaling)
            kwargs.setdefault("max_seq_len", 131072)  # Llama 3.1+ params.json leaves the context unsaid
        vocab_size = kwargs.get("vocab_size", 0)
        if vocab_size is None or (isinstance(vocab_size, int) and vocab_size < 0):
            kwargs.pop("vocab_size")  # Meta's early params.json wrote -1 (set by the tokenizer)
        return cls(**kwargs, extra=params)

    @classmethod
    def from_json(cls, path: Path) -> ModelConfig:
        try:
            params = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise HerdError(f"config file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise HerdError(f"config file {path} is not valid JSON: {e}") from None
        try:
            return cls.from_params(params)
        except (TypeError, HerdError) as e:
            raise HerdError(f"config file {path} has bad fields: {e}") from None


# What a config field of each type accepts (JSON numbers may come as int or float; numpy's count too), in words.
_ACCEPTS: dict[type, tuple[type, str]] = {
    int: (numbers.Integral, "an integer"),
    float: (numbers.Real, "a number"),
    bool: (bool, "true or false"),
    dict: (dict, "a mapping"),
}


def check_field_types(config: Any, where: str) -> None:
    """Raise a one-line HerdError naming the first field of dataclass `config` whose value has the wrong type (a
    config file's "160" where an integer belongs), with the type it has and the one expected."""
    for name, hint in _field_hints(type(config)).items():
        check_type(where + name, getattr(config, name), hint)


def check_type(key: str, value: Any, hint: Any) -> None:
    """Raise a one-line HerdError unless `value` fits `hint`: int, float, bool, dict[...], a class, or X | None."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    kinds = [typing.get_origin(option) or option for option in options if option is not type(None)]
    if value is None and len(kinds) < len(options):
        return
    for kind in kinds:
        accepted = _ACCEPTS.get(kind, (kind, ""))[0]
        if isinstance(value, accepted) and (kind is bool or not isinstance(value, bool)):
            return
    expected = [_ACCEPTS[kind][1] if kind in _ACCEPTS else f"a {kind.__name__}" for kind in kinds]
    if len(kinds) < len(options):
        expected.append("null")
    raise HerdError(f"{key} must be {' or '.join(expected)}, got {type(value).__name__} {value!r}")


@functools.cache
def _field_hints(cls: type) -> dict[str, Any]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}
