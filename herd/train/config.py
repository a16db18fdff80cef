"""The pretraining config: typed sections for the model, data, optimizer, fault policy and the run.

Read with `herd.config_overrides.load_config(PretrainConfig, path, ["optim.lr=1e-3", ...])`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from herd.config_overrides import from_dict
from herd.errors import HerdError
from herd.model import ModelConfig, preset
from herd.train.distributed import ParallelConfig


@dataclass
class ModelSpec:
    """Which model to train: a preset, with some of its fields changed."""

    preset: str = "tiny"
    """Named preset to start from (see herd.model.PRESETS)."""
    fields: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields replacing the preset's, e.g. model.fields.n_layers=4; vocab_size defaults to the data's."""

    def resolve(self, data_vocab: int) -> ModelConfig:
        """The ModelConfig to build; the vocabulary is the data tokenizer's unless fields set a larger one."""
        fields = dict(self.fields)
        fields.setdefault("vocab_size", data_vocab)
        config = from_dict(ModelConfig, fields, base=preset(self.preset), where="model.fields.")
        if config.vocab_size < data_vocab:
            raise HerdError(
                f"model.fields.vocab_size={config.vocab_size} is smaller than the data tokenizer's {data_vocab} ids; "
                "raise it or leave it unset"
            )
        return config


@dataclass
class DataSpec:
    """Token shards to train and validate on (directories written by `herd tokenize`)."""

    sources: dict[str, str] = field(default_factory=dict)
    """Source name -> token-shard directory, e.g. data.sources.web=/shards/web."""
    weights: dict[str, float] | None = None
    """Source name -> mix weight; None samples in proportion to source size."""
    val_sources: dict[str, str] | None = None
    """Held-out token shards for validation loss and bits-per-byte; None skips validation."""
    val_batches: int = 8
    """Batches (of batch_size rows per data-parallel rank, as in training) per validation; always the same first rows
    of val_sources, on any mesh."""


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 3e-4
    """Peak learning rate, reached at the end of warmup."""
    warmup_steps: int = 100
    """Optimizer steps of linear warmup from 0 to lr."""
    min_lr_ratio: float = 0.1
    """The cosine decays to this fraction of lr."""
    anneal_steps: int = 0
    """Final optimizer steps of linear decay from the cosine's floor to 0 (Llama 3's annealing); 0 turns it off."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (linear and embedding weights); norm gains are never decayed."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW's beta1, beta2."""
    eps: float = 1e-8
    """AdamW's epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off (the norm is still logged)."""


@dataclass
class FaultConfig:
    """What to do when a step's loss is NaN/Inf or spikes."""

    policy: Literal["skip", "rollback", "stop"] = "skip"
    """skip: drop the batch, no optimizer step; rollback: reload the last checkpoint and skip the data since; stop."""
    spike_factor: float = 0.0
    """A loss above spike_factor x its running mean is a spike; 0 detects only NaN/Inf."""
    spike_warmup: int = 20
    """Optimizer steps before spikes are looked for (the early loss falls fast)."""
    spike_ema: float = 0.9
    """Decay of the running mean of good losses that spikes are measured against."""
    max_bad_steps: int = 5
    """Stop the run after this many bad steps in a row."""
    sdc_interval: int = 0
    """Every this many steps, recompute the step's forward and backward and compare each rank's loss with the first
    computation bitwise; a rank that gets another number has silent data corruption: the run stops naming it
    (torchrun restarts it from the last checkpoint; drain that host). 0 turns the check off."""
    hang_timeout_s: float = 0.0
    """A step (with its validation and save) running longer than this is a hang: each rank dumps its stacks and exits 1
    (torchrun --max-restarts then restarts the job from the last checkpoint); 0 turns the watchdog off."""


@dataclass
class Stage:
    """One stage of a sequence-length / batch-size schedule (Llama 3: 4M-token batches of 4K rows, then 8M of 8K, ...)."""

    step: int = 0
    """First optimizer step of the stage."""
    seq_len: int = 0
    """Tokens per row from that step on; divides the run's seq_len (rows of seq_len are cut into pieces this long)."""
    batch_tokens: int = 0
    """Tokens per optimizer step over all data-parallel ranks: a multiple of batch_size x seq_len x ranks (the
    micro-batches of a step are its grad_accum)."""


@dataclass
class PretrainConfig:
    """Everything one pretraining run needs; the run directory `out_dir` holds its outputs and checkpoints."""

    out_dir: str = "runs/pretrain"
    """Run directory: checkpoints, metrics.jsonl, curves.png, manifest.json, the final model."""
    model: ModelSpec = field(default_factory=ModelSpec)
    """The model to train."""
    data: DataSpec = field(default_factory=DataSpec)
    """Training and validation token shards."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and LR schedule."""
    faults: FaultConfig = field(default_factory=FaultConfig)
    """NaN/Inf, loss-spike and hang handling."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Data / tensor / pipeline parallel degrees under torchrun (batch_size is per data-parallel rank)."""
    steps: int = 1000
    """Optimizer steps to train for."""
    batch_size: int = 8
    """Rows per micro-batch on each data-parallel rank."""
    seq_len: int = 1024
    """Tokens per row."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (one step sees batch_size * grad_accum * seq_len tokens)."""
    grad_accum_schedule: dict[int, int] | None = None
    """Batch-size ramp: optimizer step -> grad_accum from that step on, e.g. {0: 1, 200: 2, 600: 4}."""
    stages: list[Stage] = field(default_factory=list)
    """Sequence-length and batch-size schedule, e.g. [{step: 0, seq_len: 128, batch_tokens: 4096}, {step: 100,
    seq_len: 256, batch_tokens: 8192}]; a micro-batch keeps batch_size x seq_len tokens (more, shorter rows), the data
    order is the unstaged run's. Replaces grad_accum and grad_accum_schedule; empty: no schedule."""
    seed: int = 0
    """Seeds the weights and the data order."""
    device: str = "auto"
    """cpu, cuda, cuda:1, ...; auto picks cuda when available."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype: bfloat16 autocast (weights and optimizer stay fp32) or float32; auto is bf16 on GPU, fp32 on CPU.
    On a CPU with native bf16 (avx512_bf16, AMX) bfloat16 trains faster (benchmarks/README.md;
    `benchmarks/train_cpu.py --dtype bfloat16` compares it with HF)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (less memory, ~1/3 more compute)."""
    compile: bool = False
    """torch.compile each transformer block."""
    eval_interval: int = 0
    """Validate every this many optimizer steps and at the end; 0 never (needs data.val_sources)."""
    checkpoint_interval: int = 100
    """Save a resume checkpoint every this many optimizer steps and at the end; 0 only at the end."""
    keep_last: int = 2
    """Resume checkpoints kept on disk (the oldest are deleted)."""
    async_checkpoint: bool = False
    """Write checkpoints in a background thread (DCP async_save; training goes on once the state is copied to CPU
    memory); `latest` moves to a checkpoint only after all its shards are written."""
    resume: bool = True
    """Continue from out_dir's latest checkpoint when there is one (auto-resume)."""
    peak_tflops: float | None = None
    """Device peak TFLOPS for MFU; None uses the table for known GPUs (no MFU on CPU)."""
    export_format: Literal["herd", "hf", "meta"] | None = "herd"
    """Format of the final model written to out_dir/model; None writes none."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "seq_len": self.seq_len,
                    "grad_accum": self.grad_accum, "keep_last": self.keep_last,
                    "data.val_batches": self.data.val_batches, "faults.max_bad_steps": self.faults.max_bad_steps}
        for name, value in positive.items():
            if value < 1:
                raise HerdError(f"{name} must be at least 1, got {value}")
        for name in ("eval_interval", "checkpoint_interval", "optim.warmup_steps", "optim.anneal_steps",
                     "faults.sdc_interval"):
            value = self._get(name)
            if value < 0:
                raise HerdError(f"{name} must be 0 or more, got {value}")
        if self.optim.warmup_steps + self.optim.anneal_steps > self.steps:
            raise HerdError(
                f"optim.warmup_steps ({self.optim.warmup_steps}) + optim.anneal_steps ({self.optim.anneal_steps}) "
                f"exceed steps ({self.steps}); lower them or raise steps"
            )
        if not 0 <= self.optim.min_lr_ratio <= 1:
            raise HerdError(f"optim.min_lr_ratio must be in [0, 1], got {self.optim.min_lr_ratio}")
        for start, accum in (self.grad_accum_schedule or {}).items():
            if start < 0 or accum < 1:
                raise HerdError(f"grad_accum_schedule entry {start}: {accum} needs step >= 0 and grad_accum >= 1")
        self._check_stages()
        if self.eval_interval and not self.data.val_sources:
            raise HerdError("eval_interval is set but data.val_sources is empty; add validation shards or set eval_interval=0")
        if self.faults.policy == "rollback" and not self.checkpoint_interval:
            raise HerdError("faults.policy=rollback reloads checkpoints; set checkpoint_interval or faults.policy=skip")
        if self.faults.spike_factor and self.faults.spike_factor <= 1:
            raise HerdError(f"faults.spike_factor must be above 1 (or 0 to turn spikes off), got {self.faults.spike_factor}")
        if not 0 <= self.faults.spike_ema < 1:
            raise HerdError(f"faults.spike_ema must be in [0, 1), got {self.faults.spike_ema}")
        if self.faults.hang_timeout_s < 0:
            raise HerdError(f"faults.hang_timeout_s must be 0 (off) or more, got {self.faults.hang_timeout_s}")
        tp = self.parallel.tp
        if tp > 1 and self.parallel.sequence_parallel and self.seq_len % tp:
            raise HerdError(
                f"parallel.sequence_parallel splits seq_len={self.seq_len} over parallel.tp={tp} ranks; "
                "pick a seq_len divisible by tp or set parallel.sequence_parallel=false"
            )
        self._check_pipeline()

    def _check_stages(self) -> None:
        if not self.stages:
            return
        if self.grad_accum != 1 or self.grad_accum_schedule:
            raise HerdError("stages set the micro-batches per step; leave grad_accum=1 and grad_accum_schedule unset")
        if self.stages[0].step != 0 or any(a.step >= b.step for a, b in zip(self.stages, self.stages[1:])):
            raise HerdError(f"stages must start at step 0 in increasing step order, got steps {[s.step for s in self.stages]}")
        micro = self.batch_size * self.seq_len
        for i, stage in enumerate(self.stages):
            if stage.seq_len < 1 or self.seq_len % stage.seq_len:
                raise HerdError(f"stages[{i}].seq_len={stage.seq_len} must divide seq_len={self.seq_len}")
            if stage.batch_tokens < micro or stage.batch_tokens % micro:
                raise HerdError(
                    f"stages[{i}].batch_tokens={stage.batch_tokens} must be a multiple of batch_size x seq_len = {micro}"
                )

    def _check_pipeline(self) -> None:
        if not self.stages:  # stages' micro-batch counts depend on the data-parallel degree: checked at launch
            self.parallel.check_micro_batches([self.grad_accum, *(self.grad_accum_schedule or {}).values()])

    def _get(self, dotted: str) -> Any:
        value: Any = self
        for part in dotted.split("."):
            value = getattr(value, part)
        return value

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir)
