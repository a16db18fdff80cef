"""The scaling-law config (`herd scaling sweep|fit|predict|mix --config C key=value ...`).

One file drives every command: the compute budgets, the model ladder, the pretraining settings shared by every
run (a `PretrainConfig` whose out_dir, steps and schedule each run sets), the downstream tasks, and for
`herd scaling mix` the candidate data mixes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from herd.errors import HerdError
from herd.train.config import OptimConfig, PretrainConfig

PER_RUN = ("out_dir", "steps")
"""PretrainConfig fields every run sets itself (with eval_interval, checkpoint_interval, keep_last, optim.warmup_steps)."""


@dataclass
class DownstreamSpec:
    """Benchmarks scored on every run's final model: NLL of the correct answer and accuracy."""

    tasks: list[str] = field(default_factory=list)
    """herd eval task names (mmlu, arc_challenge, code_cloze, humaneval_mc, ...) or the embedded corpus's synth_*."""
    data_dir: str = "data/benchmarks"
    """Where the tasks' data is; with `corpus` set, the corpus's eval files (synth_* tasks, code_cloze)."""
    limit: int | None = 200
    """Samples per task (the first ones); None: all."""
    batch_size: int = 16


@dataclass
class ScalingConfig:
    """An isoFLOP sweep (and the held-out prediction and mix experiments built on it)."""

    out_dir: str = "runs/scaling"
    """Sweep directory: runs/<name>/ per training run, results.jsonl, fits.json, report.md and the PNGs."""
    budgets: list[float] = field(default_factory=list)
    """Training compute per run in FLOPs (C = 6 N D, N the compute parameters: training FLOPs per token / 6)."""
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The ladder: name -> ModelConfig fields on top of train.model.preset, e.g. {d64: {dim: 64, n_layers: 2}}."""
    target_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Larger shapes kept out of the sweep that `herd scaling predict` may pick for the target budget."""
    train: PretrainConfig = field(default_factory=lambda: PretrainConfig(optim=OptimConfig(warmup_steps=0), progress=False))
    """The pretraining settings every run shares: model, data, optim, batch_size, seq_len, device, ...; each run sets
    out_dir, steps, eval_interval (= steps), checkpoint_interval (steps // 4), keep_last (1) and optim.warmup_steps."""
    warmup_fraction: float = 0.05
    """Each run warms up for this fraction of its steps (its cosine then spans the rest: one schedule per run)."""
    min_steps: int = 20
    """(budget, model) pairs with fewer optimizer steps are left out."""
    tokens_per_param: tuple[float, float] = (0.0, float("inf"))
    """Only pairs whose D / N lies in this range: keeps each budget's models near its optimum (Chinchilla's is ~20),
    where the isoFLOP parabola holds, and saves the runs far from it."""
    max_epochs: float = 1.0
    """Pairs needing more than this many passes over the training data are left out (data-limited)."""
    workers: int = 1
    """Runs trained at once (processes); on CPU each gets threads = cores // workers."""
    downstream: DownstreamSpec = field(default_factory=DownstreamSpec)
    """Benchmarks scored on every final model."""
    target_budget: float | None = None
    """The budget `herd scaling predict` predicts (and with --train, trains) when not given on the command line."""
    mixes: dict[str, dict[str, float]] = field(default_factory=dict)
    """`herd scaling mix`: candidate mixes, name -> {source: weight} over train.data.sources."""
    corpus: str | None = None
    """stdlib: the source of Python's standard library (real code; herd.corpus.stdlib); micro | tiny | small:
    herd's generated corpus. Either is tokenized into out_dir/data and train.data filled in; None: train.data
    names existing token shards."""
    vocab_size: int = 2048
    """With `corpus`: the BPE vocabulary trained on it."""
    bootstrap_samples: int = 200
    """Resamples behind each interval in the fits."""

    def __post_init__(self) -> None:
        if not self.budgets:
            raise HerdError("budgets is empty; give the training FLOPs per run, e.g. budgets=[1e12,3e12,1e13]")
        if any(b <= 0 for b in self.budgets):
            raise HerdError(f"budgets must be positive FLOPs, got {self.budgets}")
        if not self.models:
            raise HerdError("models is empty; give the ladder, e.g. models.d64={dim: 64, n_layers: 2}")
        unset = PretrainConfig()
        for name in PER_RUN:
            if getattr(self.train, name) != getattr(unset, name):
                raise HerdError(f"train.{name} is set per run by the sweep; remove it")
        if not 0 <= self.warmup_fraction < 1:
            raise HerdError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        low, high = self.tokens_per_param
        if not 0 <= low < high:
            raise HerdError(f"tokens_per_param must be a range [low, high] with 0 <= low < high, got {self.tokens_per_param}")
        if self.min_steps < 1 or self.workers < 1 or self.max_epochs <= 0:
            raise HerdError("min_steps and workers must be at least 1 and max_epochs above 0")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir)

    def pretrain_config(self, name: str, *, steps: int, fields: dict[str, Any] | None = None,
                        weights: dict[str, float] | None = None) -> PretrainConfig:
        """The PretrainConfig of run `name`: the shared train section, the ladder's model fields, its steps."""
        train = self.train
        data = train.data if weights is None else replace(train.data, weights=weights)
        return replace(
            train, out_dir=str(self.run_dir / "runs" / name),
            model=replace(train.model, fields={**train.model.fields, **(fields or {})}), data=data,
            optim=replace(train.optim, warmup_steps=int(self.warmup_fraction * steps)), steps=steps,
            eval_interval=steps, checkpoint_interval=max(steps // 4, 1), keep_last=1,
        )


__all__ = ["DownstreamSpec", "ScalingConfig"]
