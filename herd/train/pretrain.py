"""The pretraining stage: `pretrain(config)` builds the data, model, optimizer and loop, runs it, writes the run dir.

It checks the memory estimate before allocating, resumes from the run dir's latest checkpoint, and skips a finished
run. Under torchrun every rank calls it: the model is split over the mesh by `parallelize`, rank 0 writes the files.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from herd.config_overrides import to_dict
from herd.errors import HerdError
from herd.model import ModelConfig, build_model
from herd.run_dir import read_manifest, write_manifest
from herd.tokenizer import SPECIAL_TOKENS, Tokenizer
from herd.train.checkpointing import CheckpointManager
from herd.train.config import PretrainConfig
from herd.train.data_loader import DataLoaderConfig, TokenDataLoader
from herd.train.distributed import Distributed, init_distributed
from herd.train.losses import next_token_loss, token_losses
from herd.train.memory_estimate import check_memory
from herd.train.metrics import (
    MetricsLog,
    bits_per_byte,
    flops_per_token,
    peak_tflops,
    plot_curves,
    read_records,
    token_byte_lengths,
)
from herd.train.optimizer import autocast_dtype_for, build_optimizer
from herd.train.parallelize import check_layout, parallelize
from herd.train.pipeline import Pipeline, split_stage
from herd.train.schedule import grad_accum_at, learning_rate, stage_at
from herd.train.token_shards import TokenManifest
from herd.train.trainer import LoopConfig, LoopState, Trainer
from herd.train.weight_init import init_sharded_weights

MANIFEST = "manifest.json"


@dataclass
class PretrainResult:
    """What a pretraining run produced."""

    run_dir: Path
    steps: int
    tokens: int
    final_loss: float | None
    final_val_loss: float | None
    final_val_bpb: float | None
    model_dir: Path | None
    resumed_from_step: int


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Train (or continue training) the model `config` describes; outputs go to `config.out_dir`."""
    run_dir = config.run_dir
    done = read_manifest(run_dir / MANIFEST, to_dict(config)) if config.resume else None
    if done:
        return _result_from_manifest(run_dir, done)
    distributed = init_distributed(config.parallel, config.device)
    try:
        return _pretrain(config, distributed)
    finally:
        distributed.close()


def _pretrain(config: PretrainConfig, distributed: Distributed) -> PretrainResult:
    run_dir, started, device = config.run_dir, time.time(), distributed.device
    autocast = autocast_dtype_for(config.dtype, device)
    data = TokenDataLoader(
        DataLoaderConfig(config.data.sources, config.data.weights, config.batch_size, config.seq_len, config.seed),
        rank=distributed.coordinate("dp"), world_size=distributed.degree("dp"),
    )
    model_config = config.model.resolve(data.n_words)
    if config.seq_len > model_config.max_seq_len:
        raise HerdError(f"seq_len {config.seq_len} exceeds the model's max_seq_len {model_config.max_seq_len}; lower seq_len")
    check_layout(model_config, distributed, config.parallel.pp_stages_per_rank)
    check_memory(model_config, config, device, autocast, shards=distributed.world_size)

    model = build_model(model_config, device="meta")
    pipeline_parallel = distributed.degree("pp") > 1
    if pipeline_parallel:
        model = split_stage(model, distributed, config.parallel.pp_stages_per_rank)
    fsdp = distributed.degree("dp") > 1
    parallelize(
        model, distributed, activation_checkpointing=config.activation_checkpointing, compile=config.compile,
        sequence_parallel=config.parallel.sequence_parallel, param_dtype=autocast or torch.float32,
    )
    if fsdp:
        autocast = None  # FSDP's mixed-precision policy computes in that dtype already
    model.to_empty(device=device)
    init_weights(model, model_config, config.seed, distributed)
    model.train()
    optimizer = build_optimizer(model, config.optim, device)

    checkpoints = CheckpointManager(
        run_dir / "checkpoints", config.keep_last, is_main=distributed.is_main, async_save=config.async_checkpoint
    )
    if not config.resume and checkpoints.latest() is not None:
        raise HerdError(f"{run_dir} already holds checkpoints; pass a new out_dir, or resume=true to continue them")
    run_info = {"config": to_dict(config), "model": model_config.to_params()}
    _check_same_run(checkpoints, run_info)
    tokenizer = Tokenizer(TokenManifest.load(next(iter(config.data.sources.values()))).tokenizer_path)
    accum_at, before_step, flops = _schedule(config, model_config, data, distributed.degree("dp"))
    loop = LoopConfig(
        steps=config.steps,
        lr_at=partial(
            learning_rate, peak=config.optim.lr, total=config.steps, warmup=config.optim.warmup_steps,
            floor_ratio=config.optim.min_lr_ratio, anneal=config.optim.anneal_steps,
        ),
        accum_at=accum_at,
        before_step=before_step,
        grad_clip=config.optim.grad_clip,
        checkpoint_interval=config.checkpoint_interval,
        eval_interval=config.eval_interval,
        faults=config.faults,
        progress=config.progress and distributed.is_main,
    )
    pipeline = Pipeline(model, distributed, config.parallel.pp_schedule) if pipeline_parallel else None
    trainer = Trainer(
        model, optimizer, next_token_loss, data, loop, MetricsLog(run_dir, enabled=distributed.is_main),
        device=device, autocast_dtype=autocast, checkpoints=checkpoints, run_info=run_info,
        evaluate=partial(validate, model, config, tokenizer, distributed, pipeline) if config.data.val_sources else None,
        flops_per_token=flops, peak_tflops=peak_tflops(device, config.peak_tflops),
        distributed=distributed, forward_backward=pipeline.forward_backward if pipeline else None,
    )
    if config.resume:
        trainer.resume()
    resumed_from = trainer.state.step
    state = trainer.run()
    result = _finish(config, model_config, tokenizer, checkpoints, state, resumed_from, started) if distributed.is_main else None
    distributed.barrier()
    return result or _result_from_manifest(run_dir, json.loads((run_dir / MANIFEST).read_text()))


def _schedule(
    config: PretrainConfig, model_config: ModelConfig, data: TokenDataLoader, dp: int
) -> tuple[Callable[[int], int], Callable[[int], None] | None, float | Callable[[int], float]]:
    """(micro-batches of a step, the hook that sets a step's row length, model FLOPs per token of a step) for the
    run's grad-accumulation ramp or sequence-length stages."""
    if not config.stages:
        accum_at = partial(grad_accum_at, base=config.grad_accum, schedule=config.grad_accum_schedule)
        return accum_at, None, flops_per_token(model_config, config.seq_len)
    step_tokens = config.batch_size * config.seq_len * dp
    for i, stage in enumerate(config.stages):
        if stage.batch_tokens % step_tokens:
            raise HerdError(
                f"stages[{i}].batch_tokens={stage.batch_tokens} must be a multiple of batch_size x seq_len x {dp} "
                f"data-parallel ranks = {step_tokens}; change it or batch_size"
            )
    config.parallel.check_micro_batches(stage.batch_tokens // step_tokens for stage in config.stages)
    flops = {stage.seq_len: flops_per_token(model_config, stage.seq_len) for stage in config.stages}
    return (
        lambda step: stage_at(step, config.stages).batch_tokens // step_tokens,
        lambda step: data.set_seq_len(stage_at(step, config.stages).seq_len),
        lambda step: flops[stage_at(step, config.stages).seq_len],
    )


def _finish(
    config: PretrainConfig, model_config: ModelConfig, tokenizer: Tokenizer, checkpoints: CheckpointManager,
    state: LoopState, resumed_from: int, started: float,
) -> PretrainResult:
    """Rank 0's ending: the curves PNG, the final model exported from the last checkpoint, the manifest."""
    run_dir = config.run_dir
    records = read_records(run_dir / "metrics.jsonl")
    plot_curves(records, run_dir / "curves.png")
    model_dir = None
    if config.export_format is not None:
        from herd.checkpoint import save

        whole = build_model(model_config, device="meta")
        whole.to_empty(device="cpu")
        checkpoints.load_model(whole)
        model_dir = save(whole, tokenizer, run_dir / "model", format=config.export_format)
    last = lambda key: next((r[key] for r in reversed(records) if key in r), None)
    manifest = write_manifest(run_dir / MANIFEST, {
        "stage": "pretrain", "config": to_dict(config), "model": model_config.to_params(),
        "duration_s": time.time() - started, "train_seconds": state.train_seconds, "steps": state.step,
        "tokens": state.tokens, "skipped_steps": state.skipped, "rollbacks": state.rollbacks,
        "resumed_from_step": resumed_from, "final_loss": last("loss"), "final_val_loss": last("val_loss"),
        "final_val_bpb": last("val_bpb"), "checkpoint": str(checkpoints.latest()),
        "model_dir": str(model_dir) if model_dir else None,
    })
    return _result_from_manifest(run_dir, manifest)


def init_weights(model: nn.Module, config: ModelConfig, seed: int, distributed: Distributed) -> None:
    """Fresh weights, the same values on any mesh: a sharded model (or stage) initializes only its own shards."""
    if distributed.mesh is None:
        model.init_weights(seed)
    else:
        init_sharded_weights(model, config, seed)


@torch.no_grad()
def validate(
    model: nn.Module, config: PretrainConfig, tokenizer: Tokenizer, distributed: Distributed,
    pipeline: Pipeline | None = None,
) -> dict[str, float]:
    """Validation loss (nats/token) and bits-per-byte on the first `data.val_batches` batches of `val_sources`.

    The same rows on any mesh: each data-parallel replica takes its share of each batch (as in training), under
    pipeline parallelism the batches run forward through the stages, and the figures are summed over the replicas.
    """
    loader = TokenDataLoader(
        DataLoaderConfig(config.data.val_sources, None, config.batch_size, config.seq_len, config.seed),
        rank=distributed.coordinate("dp"), world_size=distributed.degree("dp"),
    )
    byte_lengths = token_byte_lengths(tokenizer.n_words, len(SPECIAL_TOKENS), tokenizer.token_bytes)
    nats = tokens = nats_with_bytes = n_bytes = 0.0
    for _, batch in zip(range(config.data.val_batches), loader):
        batch = tuple(t.to(distributed.device) for t in batch)
        losses = token_losses(model, batch) if pipeline is None else pipeline.token_losses(batch)
        if losses is None:
            continue  # an earlier pipeline stage: the last one counts
        losses = losses.float()
        nats += float(losses.sum())
        tokens += int((batch[1] >= 0).sum())
        counted_nats, counted_bytes = bits_per_byte(losses, batch[1], byte_lengths)
        nats_with_bytes += counted_nats
        n_bytes += counted_bytes
    nats, tokens, nats_with_bytes, n_bytes = distributed.sum_over_replicas([nats, tokens, nats_with_bytes, n_bytes])
    return {"val_loss": nats / max(tokens, 1), "val_bpb": nats_with_bytes / (math.log(2) * max(n_bytes, 1))}


# --- helpers ---------------------------------------------------------------------------------------------
def _check_same_run(checkpoints: CheckpointManager, run_info: dict[str, Any]) -> None:
    latest = checkpoints.latest()
    if latest is None:
        return
    saved = json.loads((latest / "config.json").read_text())
    if saved["model"] != run_info["model"]:
        raise HerdError(
            f"{checkpoints.directory} holds checkpoints of another model; pass a new out_dir or the same model settings"
        )


def _result_from_manifest(run_dir: Path, manifest: dict[str, Any]) -> PretrainResult:
    return PretrainResult(
        run_dir=run_dir, steps=manifest["steps"], tokens=manifest["tokens"], final_loss=manifest["final_loss"],
        final_val_loss=manifest["final_val_loss"], final_val_bpb=manifest["final_val_bpb"],
        model_dir=Path(manifest["model_dir"]) if manifest["model_dir"] else None,
        resumed_from_step=manifest["resumed_from_step"],
    )


__all__ = ["PretrainResult", "init_weights", "pretrain", "validate"]
