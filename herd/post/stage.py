"""What every post-training stage shares: its config fields, loading the starting model, and running the shared
training loop (`herd.train.trainer.Trainer`) with the stage's loss, data and validation into a resumable run dir.

Under `tp` > 1 (DPO, PPO, GRPO under torchrun) the frozen models are split over the ranks by the inference plan
(herd.model.tensor_parallel: each rank reads its slice). DPO's policy is split by herd's DTensor training plan
(herd.train.parallelize, as pretraining splits it; exported whole from the last checkpoint). Where that plan does not
fit, the policy is whole on every rank, which all take the same steps (the same data, seeds and all-reduced reference
log-probs), its gradients averaged over the ranks before each step so the copies stay equal on any device: RL
policies (rollouts generate from them, and generation runs on plain weights), LoRA policies (their adapters wrap the
linears the plan splits) and tied heads (which the plan does not split).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from herd.config_overrides import to_dict
from herd.errors import HerdError
from herd.model import ModelConfig
from herd.model.tensor_parallel import TensorParallel, check_config, init_tensor_parallel
from herd.post.lora import LoRAConfig, WithoutAdapters, apply_lora, merge_lora, save_adapters
from herd.run_dir import read_manifest, write_manifest
from herd.tokenizer import Tokenizer
from herd.train.checkpointing import CheckpointManager
from herd.train.config import FaultConfig, OptimConfig
from herd.train.distributed import Distributed, ParallelConfig, init_distributed, pick_device
from herd.train.losses import Batch, LossFn, LossOutput
from herd.train.metrics import MetricsLog, plot_curves, read_records
from herd.train.optimizer import autocast_dtype_for, build_optimizer
from herd.train.parallelize import apply_tensor_parallel
from herd.train.schedule import learning_rate
from herd.train.trainer import LoopConfig, LoopState, Trainer

MANIFEST = "manifest.json"


def fine_tuning_optim() -> OptimConfig:
    """Llama 3's post-training optimizer: AdamW at LR 1e-5, a short warmup, cosine to 10%, no weight decay."""
    return OptimConfig(lr=1e-5, warmup_steps=0, weight_decay=0.0)


@dataclass
class PostConfig:
    """The fields every post-training stage has; each stage's config adds its data and loss settings."""

    out_dir: str = "runs/post"
    """Run directory: checkpoints, metrics.jsonl, curves.png, manifest.json, the final model."""
    model: str = "tiny"
    """The starting model: anything `herd.load` reads (a herd / HF / Meta directory or a preset)."""
    steps: int = 1000
    """Optimizer steps to train for."""
    batch_size: int = 8
    """Examples per micro-batch (packed rows for SFT, preference pairs for the reward model and DPO)."""
    seq_len: int = 2048
    """Tokens per row; longer examples are cut (and counted in the manifest)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    seed: int = 0
    """Seeds the data order and any new weights."""
    device: str = "auto"
    """cpu, cuda, cuda:1, ...; auto picks cuda when available."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype: bfloat16 autocast (trained weights stay fp32; with LoRA the frozen base is held in bf16) or
    float32; auto is bf16 on GPU, fp32 on CPU."""
    optim: OptimConfig = field(default_factory=fine_tuning_optim)
    """Optimizer and LR schedule (Llama 3's post-training defaults)."""
    faults: FaultConfig = field(default_factory=FaultConfig)
    """NaN/Inf and loss-spike handling."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA adapters (lora.rank > 0) instead of training every weight."""
    eval_interval: int = 0
    """Validate every this many steps and at the end; 0 only at the end (when the stage has held-out data)."""
    checkpoint_interval: int = 100
    """Save a resume checkpoint every this many steps and at the end; 0 only at the end."""
    keep_last: int = 2
    """Resume checkpoints kept on disk."""
    resume: bool = True
    """Continue from out_dir's latest checkpoint when there is one; skip a run that finished with this config."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "keep_last"):
            if getattr(self, name) < 1:
                raise HerdError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_interval", "checkpoint_interval"):
            if getattr(self, name) < 0:
                raise HerdError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.optim.warmup_steps + self.optim.anneal_steps > self.steps:
            raise HerdError(
                f"optim.warmup_steps ({self.optim.warmup_steps}) + optim.anneal_steps ({self.optim.anneal_steps}) "
                f"exceed steps ({self.steps}); lower them or raise steps"
            )

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir)


@dataclass
class ReferenceConfig(PostConfig):
    """A stage measured against the frozen starting model (DPO, PPO, GRPO): the PostConfig fields plus `tp`."""

    tp: int = 1
    """Tensor-parallel ranks (under torchrun, --nproc-per-node tp): the frozen reference (without LoRA) and reward
    model are split over them, each rank reading its slice, and DPO's policy (without LoRA, untied) by the training
    plan; other trained models (RL's policy, PPO's value model) are whole on every rank, which all take the same
    steps; rank 0 writes the run directory."""


@dataclass
class PostResult:
    """What a post-training stage produced."""

    run_dir: Path
    steps: int
    final_loss: float | None
    figures: dict[str, Any]
    """The last validation figures and the stage's data counts."""
    model_dir: Path | None


def finished(config: PostConfig) -> PostResult | None:
    """The result of a run of this exact config that already completed in out_dir, if any (then the stage skips)."""
    done = read_manifest(config.run_dir / MANIFEST, to_dict(config)) if config.resume else None
    return _result(config.run_dir, done) if done else None


def join_ranks(config: ReferenceConfig) -> TensorParallel | None:
    """This process's place among `config.tp` torchrun ranks (None for tp 1 alone); a starting model whose heads,
    KV heads, vocabulary or FFN do not split over them fails first, before any weight is read."""
    from herd.checkpoint import info

    if config.tp > 1:
        check_config(ModelConfig.from_params(info(config.model)["config"]), config.tp)
    return init_tensor_parallel(config.tp, pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0"))))


def load_start(config: PostConfig) -> tuple[nn.Module, Tokenizer, torch.device]:
    """The starting model on the configured device (a torchrun rank's own GPU), its tokenizer and the device: fp32,
    or with LoRA adapters (fp32) when lora.rank > 0, whose frozen base is bf16 under bf16 autocast (half the memory
    of the 8B's weights)."""
    from herd.checkpoint import load

    device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    bf16_base = config.lora.rank and autocast_dtype_for(config.dtype, device) == torch.bfloat16
    model, tok = load(config.model, device=device, dtype=torch.bfloat16 if bf16_base else torch.float32)
    if config.lora.rank:
        apply_lora(model, config.lora)
    return model, tok, device


def shard_policy(config: PostConfig, policy: nn.Module, group: TensorParallel | None) -> Distributed | None:
    """Split `policy` over the group's ranks by herd's DTensor training plan (no sequence parallelism: post-training
    rows vary in length) and return the mesh the loop runs on; None, leaving it whole, alone or where the plan does
    not fit (LoRA adapters, a tied head)."""
    if group is None or config.lora.rank or policy.config.tie_word_embeddings:
        return None
    parallel = ParallelConfig(dp_shard=1, tp=group.world, sequence_parallel=False)
    distributed = init_distributed(parallel, str(policy.tok_embeddings.weight.device))
    apply_tensor_parallel(policy, distributed.mesh["tp"], sequence_parallel=False)
    return distributed


def export_from_checkpoint(config: PostConfig, model_config: ModelConfig, save: Callable[[nn.Module, Path], Path],
                           out: Path) -> Path:
    """`save(whole, out)` of the trained model read whole from the run's last checkpoint (a DTensor policy's
    export, on rank 0 alone)."""
    from herd.model import build_model

    whole = build_model(model_config, device="meta").to_empty(device="cpu")
    CheckpointManager(config.run_dir / "checkpoints").load_model(whole)
    return save(whole, out)


def reference_model(
    config: PostConfig, policy: nn.Module, device: torch.device, group: TensorParallel | None = None
) -> Callable[..., torch.Tensor]:
    """The starting model, frozen, to measure `policy` against: with LoRA the policy itself with its adapters off
    (no second copy of the weights), else a copy loaded from config.model (this rank's slice under `group`)."""
    if config.lora.rank:
        return WithoutAdapters(policy)
    from herd.checkpoint import load

    reference, _ = load(config.model, device=device, dtype=torch.float32, tp=group)
    return reference.requires_grad_(False).eval()


def train_stage(
    config: PostConfig,
    stage: str,
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterator[Batch],
    device: torch.device,
    *,
    evaluate: Callable[[], dict[str, float]] | None,
    export: Callable[[Path], Path],
    counts: dict[str, Any],
    group: TensorParallel | None = None,
    distributed: Distributed | None = None,
) -> PostResult:
    """Run the shared loop over `data` with `loss_fn` (resuming from the run dir), then `export(run_dir / "model")`
    and write the manifest; `counts` (examples read, cut, ...) go into it. Under `group` rank 0 writes the files and
    the group is closed at the end; every rank trains `model` split over the `distributed` mesh (`shard_policy`), or
    without one its whole copy (gradients averaged)."""
    run_dir, started = config.run_dir, time.time()
    is_main = group is None or group.rank == 0
    model.train()
    checkpoints = CheckpointManager(run_dir / "checkpoints", config.keep_last, is_main=is_main)
    if not config.resume and checkpoints.latest() is not None:
        raise HerdError(f"{run_dir} already holds checkpoints; pass a new out_dir, or resume=true to continue them")
    loop = LoopConfig(
        steps=config.steps,
        lr_at=partial(learning_rate, peak=config.optim.lr, total=config.steps, warmup=config.optim.warmup_steps,
                      floor_ratio=config.optim.min_lr_ratio, anneal=config.optim.anneal_steps),
        accum_at=lambda step: config.grad_accum,
        grad_clip=config.optim.grad_clip,
        checkpoint_interval=config.checkpoint_interval,
        eval_interval=(config.eval_interval or config.steps) if evaluate is not None else 0,
        faults=config.faults,
        progress=config.progress and is_main,
    )
    trainer = Trainer(
        model, build_optimizer(model, config.optim, device), loss_fn, data, loop, MetricsLog(run_dir, enabled=is_main),
        device=device, autocast_dtype=autocast_dtype_for(config.dtype, device), checkpoints=checkpoints,
        run_info={"stage": stage, "config": to_dict(config)}, evaluate=evaluate, distributed=distributed,
    )
    if group is not None and distributed is None:
        trainer.forward_backward = _averaged(trainer.forward_backward, trainer.params, group)
    if config.resume:
        trainer.resume()
    resumed_from = trainer.state.step
    state = trainer.run()
    model.eval()
    if is_main:
        result = _finish(config, stage, state, resumed_from, started, export(run_dir / "model"), counts)
    if group is not None:
        group.close()  # a barrier first: rank 0's manifest is written
    return result if is_main else _result(run_dir, read_manifest(run_dir / MANIFEST, to_dict(config)))


def _averaged(
    forward_backward: Callable[[list[Batch]], LossOutput], params: list[nn.Parameter], group: TensorParallel
) -> Callable[[list[Batch]], LossOutput]:
    """`forward_backward`, then each gradient averaged over the ranks (DDP's all-reduce): the ranks' copies of the
    trained model stay equal where a device's kernels (a GPU's atomics) are not bit-reproducible."""

    def averaged(batches: list[Batch]) -> LossOutput:
        out = forward_backward(batches)
        for param in params:
            if param.grad is not None:
                group.mean(param.grad)
        return out

    return averaged


def export_trained(model: nn.Module, config: PostConfig, save: Callable[[Path], Path], out: Path) -> Path:
    """`save(out)` the trained model; with LoRA the adapters are first saved alone to out_dir/adapter, then merged
    into the weights that `save` writes."""
    if config.lora.rank:
        save_adapters(model, config.lora, config.run_dir / "adapter")
        merge_lora(model)
    return save(out)


def _finish(
    config: PostConfig, stage: str, state: LoopState, resumed_from: int, started: float, model_dir: Path,
    counts: dict[str, Any],
) -> PostResult:
    records = read_records(config.run_dir / "metrics.jsonl")
    plot_curves(records, config.run_dir / "curves.png")
    evals = [r for r in records if "loss" not in r]
    figures = {**counts, **{k: v for k, v in (evals[-1] if evals else {}).items() if k != "step"}}
    losses = [r["loss"] for r in records if "loss" in r]
    manifest = write_manifest(config.run_dir / MANIFEST, {
        "stage": stage, "config": to_dict(config), "duration_s": time.time() - started,
        "train_seconds": state.train_seconds, "steps": state.step, "tokens": state.tokens,
        "skipped_steps": state.skipped, "resumed_from_step": resumed_from,
        "final_loss": losses[-1] if losses else None, "figures": figures, "model_dir": str(model_dir),
    })
    return _result(config.run_dir, manifest)


def _result(run_dir: Path, manifest: dict[str, Any]) -> PostResult:
    return PostResult(run_dir, manifest["steps"], manifest["final_loss"], manifest["figures"],
                      Path(manifest["model_dir"]) if manifest["model_dir"] else None)
