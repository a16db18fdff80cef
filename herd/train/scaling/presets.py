"""Scaling presets and the embedded-corpus data behind them.

- `micro`: tiny Llama models on herd's embedded corpus, 2 CPU cores; the sweep fits in about 20 minutes and its
  target budget is 10x the largest sweep budget;
- `gpu`: the same commands at GPU scale (one run per GPU with workers = GPUs), on the embedded corpus's
  `small` size or any token shards set in train.data.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from herd.errors import HerdError
from herd.train.scaling.config import ScalingConfig

DOMAINS = ("web", "math", "code", "multilingual")


def _ladder(shapes: list[tuple[int, int]], head_dim: int = 32) -> dict[str, dict[str, Any]]:
    """Depth/width shapes -> ModelConfig fields (head_dim-wide heads; GQA with half as many KV heads when even)."""
    ladder = {}
    for dim, layers in shapes:
        heads = max(dim // head_dim, 1)
        ladder[f"d{dim}-l{layers}"] = {"dim": dim, "n_layers": layers, "n_heads": heads,
                                       "n_kv_heads": heads // 2 if heads % 2 == 0 else heads, "multiple_of": 32}
    return ladder


MICRO: dict[str, Any] = {
    "out_dir": "runs/scaling-micro",
    "corpus": "small",
    "vocab_size": 1024,
    "budgets": [1.5e11, 3e11, 6e11, 1.2e12],
    "target_budget": 1.2e13,
    "models": _ladder([(16, 2), (24, 2), (32, 2), (40, 2), (48, 2), (64, 2), (80, 3), (96, 3), (128, 4)]),
    "target_models": _ladder([(160, 5), (192, 6), (256, 6)]),
    "train": {"model": {"preset": "tiny", "fields": {"max_seq_len": 256}}, "batch_size": 4, "seq_len": 128,
              "optim": {"lr": 3e-3}, "device": "cpu", "data": {"val_batches": 16}},
    "warmup_fraction": 0.05,
    "min_steps": 200,
    "tokens_per_param": [1.0, 60.0],
    "workers": 2,
    "downstream": {"tasks": ["synth_math_mc"], "limit": 200},
}

GPU: dict[str, Any] = {
    **copy.deepcopy(MICRO),
    "out_dir": "runs/scaling-gpu",
    "vocab_size": 8192,
    "budgets": [1e16, 3e16, 1e17, 3e17],
    "target_budget": 3e18,
    "models": _ladder([(256, 4), (384, 6), (512, 8), (640, 10), (768, 12)], head_dim=64),
    "target_models": _ladder([(1024, 16), (1280, 20), (1536, 24)], head_dim=64),
    "train": {"model": {"preset": "tiny", "fields": {"max_seq_len": 1024}}, "batch_size": 32, "seq_len": 1024,
              "optim": {"lr": 1e-3}, "device": "cuda", "compile": True, "data": {"val_batches": 32}},
    "workers": 1,
    "downstream": {"tasks": ["synth_math_mc", "synth_knowledge"], "limit": 500},
}

PRESETS = {"micro": MICRO, "gpu": GPU}


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise HerdError(f"unknown scaling preset {name!r}; choose from: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def with_corpus_data(config: ScalingConfig, log: Any = print) -> ScalingConfig:
    """With `corpus` set: build the embedded corpus's token shards in out_dir/data (skipped when already built) and
    return the config pointing train.data at them and synth_* tasks at its eval files; else the config as is."""
    if config.corpus is None:
        return config
    from herd.speedrun.presets import preset_config
    from herd.speedrun.run import RunContext, run_stages

    settings = preset_config("tiny", [f"corpus.size={config.corpus}", f"tokenizer.vocab_size={config.vocab_size}"])
    settings["device"] = "cpu"
    ctx = RunContext(config.run_dir / "data", settings)
    run_stages(ctx, log, until="tokenize")
    sources = ctx.outputs("tokenize")["sources"]
    train = copy.deepcopy(config.train)
    data = train.setdefault("data", {})
    data.setdefault("sources", {d: sources[d] for d in DOMAINS})
    data.setdefault("val_sources", {"val": sources["val"]})
    downstream = config.downstream
    if downstream.data_dir == "data/benchmarks":
        downstream = dataclasses.replace(downstream, data_dir=str(ctx.stage_dir("corpus") / "eval"))
    return dataclasses.replace(config, train=train, downstream=downstream, corpus=None)


__all__ = ["PRESETS", "preset", "with_corpus_data"]
