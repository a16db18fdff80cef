"""Speedrun pretraining stages: pretraining on the doc-packed token shards (document-masked attention), then
annealing (a continued run from pretraining's last checkpoint whose LR falls linearly to 0, Llama 3's final phase).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herd.run_dir import write_text
from herd.speedrun.config import AnnealSettings, PretrainSettings
from herd.train.config import DataSpec, ModelSpec, OptimConfig, PretrainConfig

if TYPE_CHECKING:
    from herd.speedrun.run import RunContext
    from herd.train.pretrain import PretrainResult

DOMAINS = ("web", "math", "multilingual", "code")


def pretrain_config(ctx: RunContext, out: Path, s: PretrainSettings, *, steps: int, anneal: int = 0) -> PretrainConfig:
    tokens = ctx.outputs("tokenize")["sources"]
    return PretrainConfig(
        out_dir=str(out), model=ModelSpec("tiny", dict(s.model)),
        data=DataSpec(sources={d: tokens[d] for d in DOMAINS}, weights=dict(s.weights),
                      val_sources={"val": tokens["val"]}, val_batches=s.val_batches),
        optim=OptimConfig(lr=s.lr, warmup_steps=s.warmup_steps, anneal_steps=anneal),
        steps=steps, batch_size=s.batch_size, seq_len=s.seq_len, seed=ctx.seed, device=ctx.device, dtype=ctx.dtype,
        eval_interval=s.eval_interval, checkpoint_interval=s.checkpoint_interval, keep_last=1, progress=ctx.progress,
        compile=s.compile, activation_checkpointing=s.activation_checkpointing,
    )


def _outputs(result: PretrainResult) -> dict[str, Any]:
    return {"model": str(result.model_dir), "steps": result.steps, "tokens": result.tokens,
            "final_loss": result.final_loss, "final_val_loss": result.final_val_loss,
            "final_val_bpb": result.final_val_bpb, "metrics": str(result.run_dir / "metrics.jsonl"),
            "curves": str(result.run_dir / "curves.png")}


def pretrain_stage(ctx: RunContext, out: Path, s: PretrainSettings) -> dict[str, Any]:
    from herd.train.pretrain import pretrain

    return _outputs(pretrain(pretrain_config(ctx, out, s, steps=s.steps)))


def anneal_stage(ctx: RunContext, out: Path, s: AnnealSettings) -> dict[str, Any]:
    """Continue pretraining's last checkpoint (weights, optimizer, data cursor) for `steps` more steps, the LR
    falling linearly from the cosine's floor to 0."""
    from herd.train.checkpointing import CheckpointManager
    from herd.train.pretrain import pretrain

    base = ctx.config.pretrain
    ours = CheckpointManager(out / "checkpoints", keep_last=1)
    if ours.latest() is None:
        latest = CheckpointManager(ctx.stage_dir("pretrain") / "checkpoints").latest()
        assert latest is not None, "pretraining left no checkpoint"
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copytree(latest, out / "checkpoints" / latest.name, dirs_exist_ok=True)
        write_text(out / "checkpoints" / "latest", latest.name)  # the pointer last: the copy is then complete
    config = pretrain_config(ctx, out, base, steps=base.steps + s.steps, anneal=s.steps)
    outputs = _outputs(pretrain(config))
    outputs["new_tokens"] = outputs["tokens"] - ctx.outputs("pretrain")["tokens"]
    return outputs
