"""Hugging Face transformers' Llama format: `config.json` + `model*.safetensors` (+ tokenizer files).

Owns the herd<->HF tensor-name table, the rotary row permutation of wq/wk (HF rotates half-split pairs,
Meta interleaved ones) and the config mapping, for both transformers 4 and 5 config layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from herd.checkpoint import hf_tokenizer, safetensors_io
from herd.checkpoint.files import read_json
from herd.checkpoint.safetensors_io import read_tensors, write_tensors
from herd.checkpoint.state import check_state, unique_weights
from herd.errors import HerdError
from herd.model import ModelConfig, RopeScaling, Transformer
from herd.model.config import check_type
from herd.run_dir import write_json
from herd.tokenizer import Tokenizer

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"

# herd (Meta) name -> HF name, for the weights outside the blocks ...
TOP_LEVEL_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# ... and inside block N (herd `layers.N.<key>` <-> HF `model.layers.N.<value>`).
LAYER_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_HERD_TOP_LEVEL = {hf: herd for herd, hf in TOP_LEVEL_NAMES.items()}
_HERD_LAYER = {hf: herd for herd, hf in LAYER_NAMES.items()}
# Buffers old transformers versions saved with the weights.
NOT_WEIGHTS_SUFFIX = "rotary_emb.inv_freq"

# The type of each LlamaConfig key herd reads (checked before any arithmetic on them).
_HF_TYPES: dict[str, Any] = {
    "hidden_size": int,
    "intermediate_size": int,
    "num_hidden_layers": int,
    "num_attention_heads": int,
    "num_key_value_heads": int | None,
    "head_dim": int | None,
    "vocab_size": int,
    "rms_norm_eps": float,
    "rope_theta": float,
    "max_position_embeddings": int,
    "tie_word_embeddings": bool,
    "rope_scaling": dict[str, Any] | None,
    "rope_parameters": dict[str, Any] | None,
}
# Values transformers' LlamaConfig assumes for keys a config.json leaves out.
_LLAMA_CONFIG_DEFAULTS: dict[str, Any] = {
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}


def hf_name(name: str) -> str:
    """The HF name of a herd weight."""
    if name in TOP_LEVEL_NAMES:
        return TOP_LEVEL_NAMES[name]
    _, layer, key = name.split(".", 2)
    return f"model.layers.{layer}.{LAYER_NAMES[key]}"


def herd_name(name: str) -> str | None:
    """The herd name of an HF weight, or None for a name outside the table."""
    if name in _HERD_TOP_LEVEL:
        return _HERD_TOP_LEVEL[name]
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _HERD_LAYER:
        return f"layers.{parts[2]}.{_HERD_LAYER[parts[3]]}"
    return None


def to_hf_rotary(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of wq/wk per head from interleaved pairs (2i, 2i+1) to half-split pairs (i, i + d/2)."""
    rows, cols = weight.shape
    return weight.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def from_hf_rotary(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `to_hf_rotary`."""
    rows, cols = weight.shape
    return weight.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def rotary_heads(name: str, config: ModelConfig) -> int | None:
    """How many heads a herd weight's rows hold when RoPE applies to its output, else None."""
    if name.endswith("attention.wq.weight"):
        return config.n_heads
    if name.endswith("attention.wk.weight"):
        return config.kv_heads
    return None


def ffn_params(dim: int, intermediate_size: int) -> tuple[int, float | None]:
    """(multiple_of, ffn_dim_multiplier) for which Meta's SwiGLU sizing yields exactly `intermediate_size`.

    Meta's rule (`ModelConfig.ffn_hidden_dim`) rounds h = int(8 * dim / 3), times the multiplier, up to a
    multiple of `multiple_of`. With multiple_of = intermediate_size any h in 1..intermediate_size rounds to it:
    h as it is when intermediate_size >= h (all published Llamas), else h times (intermediate_size + 0.5) / h,
    which truncates to intermediate_size exactly (half a unit away from any float rounding).
    """
    base = int(2 * (4 * dim) / 3)
    if intermediate_size >= base:
        return intermediate_size, None
    return intermediate_size, (intermediate_size + 0.5) / base


def config_from_hf(hf: dict[str, Any], source: Path) -> ModelConfig:
    """A ModelConfig from a transformers LlamaConfig dict (rope keys at top level in v4, in rope_parameters in v5)."""
    if hf.get("model_type", "llama") != "llama":
        raise HerdError(f"{source} describes a {hf['model_type']!r} model; herd loads Llama models only")
    if hf.get("hidden_act", "silu") != "silu" or hf.get("attention_bias") or hf.get("mlp_bias"):
        raise HerdError(f"{source}: herd's Llama needs hidden_act 'silu' and no attention or MLP biases")
    missing = [
        k
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if k not in hf
    ]
    if missing:
        raise HerdError(f"{source} lacks {', '.join(missing)}; is it a transformers LlamaConfig?")
    hf = {**_LLAMA_CONFIG_DEFAULTS, **hf}
    for key, hint in _HF_TYPES.items():
        if key in hf:
            check_type(f"{source}: {key}", hf[key], hint)
    dim, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    rope = {**(hf.get("rope_parameters") or {}), **(hf.get("rope_scaling") or {})}
    multiple_of, multiplier = ffn_params(dim, hf["intermediate_size"])
    rope_scaling = _rope_scaling_from_hf(rope, source)
    try:
        config = ModelConfig(
            dim=dim,
            n_layers=hf["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            vocab_size=hf["vocab_size"],
            multiple_of=multiple_of,
            ffn_dim_multiplier=multiplier,
            norm_eps=hf["rms_norm_eps"],
            rope_theta=hf.get("rope_theta", rope.get("rope_theta", 10000.0)),
            rope_scaling=rope_scaling,
            max_seq_len=hf["max_position_embeddings"],
            tie_word_embeddings=hf["tie_word_embeddings"],
        )
    except HerdError as e:
        raise HerdError(f"{source}: {e}") from None
    if hf.get("head_dim") not in (None, config.head_dim):
        raise HerdError(
            f"{source}: head_dim {hf['head_dim']} != hidden_size / num_attention_heads; herd needs them equal"
        )
    return config


def _rope_scaling_from_hf(rope: dict[str, Any], source: Path) -> RopeScaling | None:
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "default":
        return None
    if rope_type != "llama3":
        raise HerdError(f"{source}: RoPE type {rope_type!r} is not supported; herd implements 'llama3' scaling")
    try:
        return RopeScaling(
            factor=rope["factor"],
            low_freq_factor=rope["low_freq_factor"],
            high_freq_factor=rope["high_freq_factor"],
            original_max_position_embeddings=rope["original_max_position_embeddings"],
        )
    except KeyError as e:
        raise HerdError(f"{source}: the llama3 RoPE scaling lacks {e.args[0]!r}") from None
    except HerdError as e:
        raise HerdError(f"{source}: {e}") from None


def config_to_hf(config: ModelConfig, dtype: torch.dtype, tokenizer: Tokenizer) -> dict[str, Any]:
    """A transformers LlamaConfig dict in the layout of Meta's Hub repos (read by transformers 4 and 5)."""
    scaling = config.rope_scaling
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_hidden_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None
        if scaling is None
        else {
            "rope_type": "llama3",
            "factor": scaling.factor,
            "low_freq_factor": scaling.low_freq_factor,
            "high_freq_factor": scaling.high_freq_factor,
            "original_max_position_embeddings": scaling.original_max_position_embeddings,
        },
        "max_position_embeddings": config.max_seq_len,
        "vocab_size": config.vocab_size,
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
    }


def weight_files(directory: Path) -> list[Path]:
    return safetensors_io.weight_files(directory)


def read_config(directory: Path) -> ModelConfig:
    path = directory / CONFIG_FILE
    return config_from_hf(read_json(path), path)


def read_state(directory: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """herd-named tensors, memory-mapped except wq/wk, whose rows are permuted back to Meta's layout."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in read_tensors(directory).items():
        if not name.endswith(NOT_WEIGHTS_SUFFIX):
            state[herd_name(name) or name] = tensor  # an unknown name stays as is, for the check to report
    check_state(config, state, str(directory))
    for name, tensor in state.items():
        heads = rotary_heads(name, config)
        if heads is not None:
            state[name] = from_hf_rotary(tensor, heads)
    return state


def read_tokenizer(directory: Path) -> Tokenizer:
    return hf_tokenizer.read_tokenizer(directory)


def write(model: Transformer, tokenizer: Tokenizer, directory: Path) -> None:
    """Weights (sharded above 5 GB), config.json, generation_config.json and the tokenizer files."""
    config = model.config
    tensors = {}
    for name, tensor in unique_weights(model).items():
        heads = rotary_heads(name, config)
        tensors[hf_name(name)] = tensor if heads is None else to_hf_rotary(tensor, heads)
    write_tensors(directory, tensors)
    write_json(directory / CONFIG_FILE, config_to_hf(config, model.tok_embeddings.weight.dtype, tokenizer))
    write_json(directory / GENERATION_CONFIG_FILE, {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id})
    hf_tokenizer.write_tokenizer(tokenizer, directory, config.max_seq_len)
