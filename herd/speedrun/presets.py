"""Speedrun presets: one nested dict of per-stage settings each, changed with `stage.key=value` overrides.

- `micro`: the whole spine in about a minute on 2 CPU cores (tests);
- `tiny`: the default, <= 15 minutes on 2 CPU cores;
- `gpu`: one GPU, a larger corpus and model, Meta's 128K tokenizer (from llama-models) instead of a trained BPE;
- `node`: a multi-GPU node under torchrun (`torchrun --nproc-per-node 8 -m herd.cli speedrun --preset node`):
  pretraining is data-parallel (FSDP2) across the node's ranks.
"""

from __future__ import annotations

import copy
from typing import Any

from herd.config_overrides import apply_overrides
from herd.errors import HerdError

MIX = {"web": 0.40, "math": 0.30, "code": 0.17, "multilingual": 0.13}

TINY: dict[str, Any] = {
    "seed": 0,
    "device": "cpu",
    "dtype": "auto",  # of every training stage: fp32 on CPU, bf16 on GPU; bfloat16 is 1.3-1.5x faster on CPUs with bf16
    "progress": True,
    "corpus": {"size": "tiny"},
    "data": {"workers": 2, "val_every": 40},
    "tokenizer": {"source": "bpe", "vocab_size": 2048},
    "tokenize": {"workers": 2},
    "pretrain": {
        "model": {"dim": 160, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 64, "max_seq_len": 512},
        "steps": 400, "batch_size": 16, "seq_len": 256, "lr": 3e-3, "warmup_steps": 40, "weights": MIX,
        "eval_interval": 100, "val_batches": 8, "checkpoint_interval": 100,
    },
    "anneal": {"steps": 60},
    "sft": {"steps": 240, "batch_size": 16, "seq_len": 256, "lr": 1e-3},
    "rm": {"steps": 60, "batch_size": 16, "seq_len": 192, "lr": 5e-4},
    "rejection": {"samples_per_prompt": 4, "max_new_tokens": 64, "temperature": 0.8},
    "sft2": {"steps": 80, "batch_size": 16, "seq_len": 256, "lr": 5e-4, "rs_repeats": 2},
    "dpo": {"steps": 60, "batch_size": 16, "seq_len": 192, "lr": 1e-4, "beta": 0.1},
    "eval": {"limit": 60, "data_dir": "data/benchmarks", "real_tasks": ["gsm8k", "humaneval"], "real_limit": 20},
    "safety": {"guard_steps": 40, "guard_examples": 400, "guard_eval": 48, "probe_prompts": 16, "max_new_tokens": 48},
    "final": {"transcripts": 4, "max_new_tokens": 64, "rm_prompts": 24},
}


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "weights":
            out[key] = _with(out[key], value)
        else:
            out[key] = value
    return out


MICRO = _with(TINY, {
    "corpus": {"size": "micro"},
    "data": {"val_every": 20},
    "tokenizer": {"vocab_size": 512},
    "pretrain": {"model": {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 32},
                 "steps": 30, "batch_size": 8, "seq_len": 128, "warmup_steps": 5, "eval_interval": 15,
                 "val_batches": 2, "checkpoint_interval": 15},
    "anneal": {"steps": 10},
    "sft": {"steps": 15, "batch_size": 8, "seq_len": 128},
    "sft2": {"steps": 8, "batch_size": 8, "seq_len": 128},
    "rm": {"steps": 10, "batch_size": 8, "seq_len": 128},
    "rejection": {"samples_per_prompt": 2, "max_new_tokens": 16},
    "dpo": {"steps": 10, "batch_size": 8, "seq_len": 128},
    "eval": {"limit": 8, "real_limit": 4},
    "safety": {"guard_steps": 6, "guard_examples": 80, "guard_eval": 8, "probe_prompts": 4, "max_new_tokens": 16},
    "final": {"transcripts": 2, "max_new_tokens": 16, "rm_prompts": 8},
})

GPU = _with(TINY, {
    "device": "cuda",
    "corpus": {"size": "small"},
    "data": {"workers": 8},
    "tokenizer": {"source": "llama3", "vocab_size": 128000},
    "tokenize": {"workers": 8},
    "pretrain": {"model": {"dim": 768, "n_layers": 12, "n_heads": 12, "n_kv_heads": 4, "multiple_of": 256,
                           "max_seq_len": 1024},
                 "steps": 5000, "batch_size": 32, "seq_len": 1024, "lr": 1e-3, "warmup_steps": 200,
                 "eval_interval": 250, "val_batches": 16, "checkpoint_interval": 500, "compile": True},
    "anneal": {"steps": 500},
    "sft": {"steps": 1500, "batch_size": 32, "seq_len": 512, "lr": 2e-4},
    "sft2": {"steps": 500, "batch_size": 32, "seq_len": 512, "lr": 1e-4},
    "rm": {"steps": 400, "batch_size": 32, "seq_len": 512, "lr": 1e-4},
    "rejection": {"samples_per_prompt": 10, "max_new_tokens": 192},
    "dpo": {"steps": 400, "batch_size": 32, "seq_len": 512, "lr": 1e-5},
    "eval": {"limit": 200, "real_limit": 200},
    "safety": {"guard_steps": 200, "guard_examples": 1200, "guard_eval": 400, "probe_prompts": 64, "max_new_tokens": 128},
    "final": {"transcripts": 6, "max_new_tokens": 192, "rm_prompts": 128},
})

NODE = _with(GPU, {
    "pretrain": {"model": {"dim": 1536, "n_layers": 24, "n_heads": 16, "n_kv_heads": 8, "multiple_of": 256,
                           "max_seq_len": 2048},
                 "steps": 10000, "batch_size": 16, "seq_len": 2048, "lr": 6e-4, "activation_checkpointing": True},
    "anneal": {"steps": 1000},
})

PRESETS = {"micro": MICRO, "tiny": TINY, "gpu": GPU, "node": NODE}


def preset_config(preset: str, overrides: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The settings of `preset` with `stage.key=value` overrides applied (values coerced to the preset's types)."""
    if preset not in PRESETS:
        raise HerdError(f"unknown speedrun preset {preset!r}; choose from: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    for item in overrides:
        key = item.split("=", 1)[0]
        if "=" not in item or not _has_path(base, key):
            stages = ", ".join(k for k in base if isinstance(base[k], dict))
            raise HerdError(f"bad speedrun override {item!r}; use stage.key=value with a stage of: {stages}")
    return _coerce(apply_overrides(base, list(overrides)), base)


def _has_path(data: dict[str, Any], dotted: str) -> bool:
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(data, dict) or part not in data:
            return i > 0 and isinstance(data, dict) and parts[i - 1] in ("weights", "model")
        data = data[part]
    return True


def _coerce(value: Any, like: Any) -> Any:
    if isinstance(value, dict):
        return {k: _coerce(v, like.get(k) if isinstance(like, dict) else None) for k, v in value.items()}
    if not isinstance(value, str) or like is None or isinstance(like, str):
        return _guess(value) if like is None and isinstance(value, str) else value
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, list):
        return [v for v in value.split(",") if v]
    return value


def _guess(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
