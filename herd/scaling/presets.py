"""Scaling presets and the corpus data behind them (Python's standard library, or herd's generated corpus).

- `micro`: tiny Llama models on 2 CPU cores, trained on the source of Python's standard library (real text that
  every machine has; see herd.corpus.stdlib) and scored on code_cloze over its held-out files; the sweep fits in about
  20 minutes and its target budget is 10x the largest sweep budget;
- `gpu`: the same commands at GPU scale (one run per GPU with workers = GPUs), on the embedded corpus's
  `small` size or any token shards set in train.data.
Each preset is a function returning a `ScalingConfig`; gpu copies and edits micro.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from herd.errors import HerdError
from herd.run_dir import write_json
from herd.scaling.config import DownstreamSpec, ScalingConfig
from herd.train.config import DataSpec, ModelSpec, OptimConfig, PretrainConfig

Log = Callable[[str], None]

DOMAINS = ("web", "math", "code", "multilingual")
EMBEDDED_SIZES = ("micro", "tiny", "small")


def _ladder(shapes: list[tuple[int, int]], head_dim: int = 32) -> dict[str, dict[str, Any]]:
    """Depth/width shapes -> ModelConfig fields (head_dim-wide heads; GQA with half as many KV heads when even)."""
    ladder = {}
    for dim, layers in shapes:
        heads = max(dim // head_dim, 1)
        ladder[f"d{dim}-l{layers}"] = {"dim": dim, "n_layers": layers, "n_heads": heads,
                                       "n_kv_heads": heads // 2 if heads % 2 == 0 else heads, "multiple_of": 32}
    return ladder


def micro() -> ScalingConfig:
    return ScalingConfig(
        out_dir="runs/scaling-micro",
        corpus="stdlib",
        vocab_size=1024,
        budgets=[1e11, 2e11, 4e11, 8e11, 1.6e12],
        target_budget=1.6e13,
        models=_ladder([(16, 2), (24, 2), (32, 2), (40, 2), (48, 2), (64, 2), (80, 3), (96, 3), (128, 4)]),
        target_models=_ladder([(160, 5), (192, 6), (256, 6)]),
        train=PretrainConfig(model=ModelSpec("tiny", {"max_seq_len": 256}), batch_size=4, seq_len=128,
                             optim=OptimConfig(lr=3e-3, warmup_steps=0), device="cpu", data=DataSpec(val_batches=16), progress=False),
        warmup_fraction=0.05,
        min_steps=200,
        tokens_per_param=(0.5, 1000.0),
        workers=2,
        downstream=DownstreamSpec(tasks=["code_cloze"], limit=300),
    )


def gpu() -> ScalingConfig:
    return dataclasses.replace(
        micro(),
        out_dir="runs/scaling-gpu",
        corpus="small",
        vocab_size=8192,
        budgets=[1e16, 3e16, 1e17, 3e17],
        target_budget=3e18,
        models=_ladder([(256, 4), (384, 6), (512, 8), (640, 10), (768, 12)], head_dim=64),
        target_models=_ladder([(1024, 16), (1280, 20), (1536, 24)], head_dim=64),
        train=PretrainConfig(model=ModelSpec("tiny", {"max_seq_len": 1024}), batch_size=32, seq_len=1024,
                             optim=OptimConfig(lr=1e-3, warmup_steps=0), device="cuda", compile=True, data=DataSpec(val_batches=32),
                             progress=False),
        workers=1,
        downstream=DownstreamSpec(tasks=["synth_math_mc", "synth_knowledge", "humaneval_mc"], limit=500),
    )


PRESETS: dict[str, Callable[[], ScalingConfig]] = {"micro": micro, "gpu": gpu}


def preset(name: str) -> ScalingConfig:
    if name not in PRESETS:
        raise HerdError(f"unknown scaling preset {name!r}; choose from: {', '.join(PRESETS)}")
    return PRESETS[name]()


def with_corpus_data(config: ScalingConfig, log: Log = print) -> ScalingConfig:
    """With `corpus` set: build its token shards in out_dir/data (skipped when already built) and return the config
    pointing train.data at them (and the downstream tasks at the corpus's eval files); else the config as is."""
    if config.corpus is None:
        return config
    if config.corpus == "stdlib":
        sources, eval_dir = _stdlib_data(config, log)
    elif config.corpus in EMBEDDED_SIZES:
        sources, eval_dir = _embedded_data(config, log)
    else:
        raise HerdError(f"unknown corpus {config.corpus!r}; choose from: stdlib, {', '.join(EMBEDDED_SIZES)}")
    val = {"val": sources.pop("val")}
    data = config.train.data
    train = dataclasses.replace(config.train, data=dataclasses.replace(
        data, sources=data.sources or sources, val_sources=data.val_sources or val))
    downstream = config.downstream
    if downstream.data_dir == "data/benchmarks":
        downstream = dataclasses.replace(downstream, data_dir=eval_dir)
    return dataclasses.replace(config, train=train, downstream=downstream, corpus=None)


def _embedded_data(config: ScalingConfig, log: Log) -> tuple[dict[str, str], str]:
    """herd's generated corpus through the speedrun's data stages: its sources (and val) and its eval directory."""
    from herd.speedrun.presets import preset_config
    from herd.speedrun.run import RunContext, run_stages

    settings = preset_config("tiny", [f"corpus.size={config.corpus}", f"tokenizer.vocab_size={config.vocab_size}"])
    ctx = RunContext(config.run_dir / "data", settings)
    run_stages(ctx, log, until="tokenize")
    sources = ctx.outputs("tokenize")["sources"]
    return {d: sources[d] for d in (*DOMAINS, "val")}, str(ctx.stage_dir("corpus") / "eval")


def _stdlib_data(config: ScalingConfig, log: Log) -> tuple[dict[str, str], str]:
    """The standard library's source as `code` (and `val`) token shards under a BPE of vocab_size trained on it,
    and the directory of its text splits (code_cloze reads the held-out files there)."""
    import os

    from herd.corpus.stdlib import write_stdlib_corpus
    from herd.data.readers import corpus_texts
    from herd.tokenizer.train_bpe import train_tokenizer
    from herd.train.token_shards import tokenize_corpus

    out = config.run_dir / "data" / "stdlib"
    done = out / "data.json"
    shards = {"code": str(out / "train"), "val": str(out / "val")}
    if done.exists() and json.loads(done.read_text())["vocab_size"] == config.vocab_size:
        return shards, str(out / "split")
    start = time.perf_counter()
    files = write_stdlib_corpus(out / "split")
    tokenizer = train_tokenizer(corpus_texts([out / "split" / "train.jsonl"])[1], config.vocab_size, out / "tokenizer.model",
                                show_progress=False)
    tokens = {}
    for name, split in (("code", "train"), ("val", "val")):
        manifest = tokenize_corpus([out / "split" / f"{split}.jsonl"], tokenizer, shards[name], os.cpu_count(),
                                   show_progress=False)
        tokens[name] = sum(shard.num_tokens for shard in manifest.shards)
    write_json(done, {"vocab_size": config.vocab_size, "files": files, "tokens": tokens})
    log(f"[scaling] stdlib corpus: {files['train']} + {files['val']} files, {tokens['code']:,} training and "
        f"{tokens['val']:,} validation tokens ({time.perf_counter() - start:.0f} s)")
    return shards, str(out / "split")


__all__ = ["PRESETS", "preset", "with_corpus_data"]
