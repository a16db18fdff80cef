"""Planning a sweep: for every (budget, model) pair, the tokens and optimizer steps that spend the budget.

Pairs are kept where they inform the fit: enough steps, D / N within `tokens_per_param`, within `max_epochs`.
A model's size is counted as its compute parameters N = training FLOPs per token / 6 (herd.train.metrics: every
matmul weight including the output head, plus attention's QK^T and AV at the run's sequence length), so a run of
D tokens costs exactly C = 6 N D. Pairs with too few steps, or needing more passes over the data than allowed,
are left out with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from herd.train.config import PretrainConfig
from herd.train.metrics import flops_per_token
from herd.scaling.config import ScalingConfig
from herd.train.token_shards import TokenManifest


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a sweep."""

    name: str
    budget: float
    model: str
    mix: str | None
    params: int
    """Every parameter (embedding included)."""
    compute_params: float
    """Training FLOPs per token / 6."""
    steps: int
    tokens: int
    flops: float
    """What the run really spends (whole steps): 6 * compute_params * tokens."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_size(config: PretrainConfig, data_vocab: int) -> tuple[int, float]:
    """(all parameters, compute parameters) of the model `config` trains."""
    model = config.model.resolve(data_vocab)
    return model.num_params(), flops_per_token(model, config.seq_len) / 6


def data_tokens(config: PretrainConfig, weights: dict[str, float] | None = None) -> tuple[int, int]:
    """(vocabulary of the data, training tokens one epoch holds): with mix weights, the most tokens sampled before
    any source is repeated."""
    manifests = {name: TokenManifest.load(path) for name, path in config.data.sources.items()}
    vocab = next(iter(manifests.values())).n_words
    counts = {name: manifest.num_tokens for name, manifest in manifests.items()}
    weights = weights or config.data.weights
    if not weights:
        return vocab, sum(counts.values())
    total = sum(weights.values())
    return vocab, int(min(counts[name] * total / weight for name, weight in weights.items() if weight > 0))


def plan_run(config: ScalingConfig, budget: float, model: str, fields: dict[str, Any], mix: str | None = None,
             *, vocab: int, name: str | None = None) -> PlannedRun:
    """The run of `model` (ladder fields) that spends `budget` FLOPs on data of `vocab` ids."""
    weights = config.mixes[mix] if mix else None
    probe = config.pretrain_config("probe", steps=1, fields=fields, weights=weights)
    params, compute_params = model_size(probe, vocab)
    tokens_per_step = probe.batch_size * probe.seq_len * probe.grad_accum
    steps = max(round(budget / (6 * compute_params * tokens_per_step)), 1)
    tokens = steps * tokens_per_step
    name = name or (f"{mix}-" if mix else "") + f"{model}-C{budget:.2e}".replace("+", "")
    return PlannedRun(name, budget, model, mix, params, compute_params, steps, tokens, 6 * compute_params * tokens)


def plan_sweep(config: ScalingConfig, mixes: list[str | None] | None = None) -> tuple[list[PlannedRun], list[str]]:
    """Every (mix, budget, model) run that fits the limits, and one line per pair left out."""
    runs, skipped = [], []
    for mix in mixes or [None]:
        weights = config.mixes[mix] if mix else None
        vocab, epoch = data_tokens(config.pretrain_config("probe", steps=1, weights=weights), weights)
        for budget in sorted(config.budgets):
            for model, fields in config.models.items():
                run = plan_run(config, budget, model, fields, mix, vocab=vocab)
                ratio = run.tokens / run.compute_params
                low, high = config.tokens_per_param
                if run.steps < config.min_steps:
                    skipped.append(f"{run.name}: {run.steps} steps < min_steps={config.min_steps}")
                elif not low <= ratio <= high:
                    skipped.append(f"{run.name}: D/N = {ratio:.3g} outside tokens_per_param=[{low:g}, {high:g}]")
                elif run.tokens > config.max_epochs * epoch:
                    skipped.append(f"{run.name}: {run.tokens:,} tokens > max_epochs={config.max_epochs} x {epoch:,}")
                else:
                    runs.append(run)
    return runs, skipped


__all__ = ["PlannedRun", "data_tokens", "model_size", "plan_run", "plan_sweep"]
