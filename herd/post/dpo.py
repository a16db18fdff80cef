"""Direct preference optimization, Llama 3's variant: `dpo(config)`.

The loss is -log sigmoid(beta * (policy - reference log-ratio of chosen minus that of rejected)) per pair plus
`nll_weight` x the mean NLL of the chosen reply tokens; log-probs cover reply content only (prompt, headers and
end-of-turn tokens are masked out). The reference is the frozen starting model (with LoRA, the policy with its
adapters off; else a copy), or its log-probs computed once before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from herd.checkpoint import save
from herd.errors import HerdError
from herd.post.batches import Batches, PairTensors, encode_pairs, pair_batch
from herd.post.data import read_preferences
from herd.post.logps import Model, token_logps
from herd.post.lora import WithoutAdapters
from herd.post.stage import (
    PostResult,
    ReferenceConfig,
    export_trained,
    finished,
    export_from_checkpoint,
    join_ranks,
    load_start,
    reference_model,
    shard_policy,
    train_stage,
)
from herd.run_dir import atomic_open
from herd.train.losses import Batch, LossOutput
from herd.train.packing import IGNORE_INDEX


@dataclass
class DPOConfig(ReferenceConfig):
    """A DPO run: the ReferenceConfig fields (tp splits the policy and the reference=model copy over the ranks) plus
    preference data and the loss settings (Llama 3's defaults)."""

    out_dir: str = "runs/dpo"
    """Run directory."""
    data: str = ""
    """Training preferences: JSONL of {"prompt", "chosen", "rejected"[, "edited"]} or a saved dataset."""
    val_data: str | None = None
    """Held-out preferences; reward accuracy and margin on them are reported."""
    beta: float = 0.1
    """Strength of the KL constraint to the reference (DPO's beta)."""
    nll_weight: float = 0.2
    """Weight of the NLL term on the chosen replies (Llama 3: 0.2); 0 is plain DPO."""
    reference: Literal["model", "precomputed"] = "precomputed"
    """model: the frozen starting model scores each batch (with LoRA the policy with its adapters off, else a
    second copy); precomputed: its log-probs of every example are computed once before training (and kept in the
    run dir), so no second model is ever loaded."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise HerdError("data is empty; set data=<preference JSONL file or dataset directory>")
        if self.beta <= 0:
            raise HerdError(f"beta must be positive, got {self.beta}")
        if self.nll_weight < 0:
            raise HerdError(f"nll_weight must be 0 or more, got {self.nll_weight}")


def dpo_loss(
    policy_logps: torch.Tensor, reference_logps: torch.Tensor, chosen_nll: torch.Tensor, beta: float, nll_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pair loss [n], per-pair margin [n]) from sequence log-probs [2n] (chosen rows, then rejected) of the
    policy and the reference, and the mean NLL of the chosen reply tokens (a scalar, added with `nll_weight`)."""
    policy_chosen, policy_rejected = policy_logps.chunk(2)
    reference_chosen, reference_rejected = reference_logps.chunk(2)
    margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margin) + nll_weight * chosen_nll, margin.detach()


def dpo_batch_loss(policy: nn.Module, batch: Batch, *, beta: float, nll_weight: float, reference: Model | None) -> LossOutput:
    """The summed DPO loss of a (tokens, targets, last, reference log-probs) batch; with a `reference` model its
    log-probs are computed here instead of read from the batch."""
    tokens, targets, _, reference_logps = batch
    logps = token_logps(policy, tokens, targets)
    if reference is not None:
        with torch.no_grad():
            reference_logps = token_logps(reference, tokens, targets).sum(1)
    chosen_logps, chosen_targets = logps.chunk(2)[0], targets.chunk(2)[0]
    chosen_nll = -chosen_logps.sum() / (chosen_targets != IGNORE_INDEX).sum().clamp(min=1)
    losses, margins = dpo_loss(logps.sum(1), reference_logps, chosen_nll, beta, nll_weight)
    metrics = {"correct_pairs": float((margins > 0).sum()), "margin_sum": float(margins.sum())}
    return LossOutput(losses.sum(), losses.shape[0], metrics)


@torch.no_grad()
def sequence_logps(model: Model, pairs: PairTensors, batch_size: int, pad_id: int, device: torch.device) -> torch.Tensor:
    """Reply log-probs [2n] of every sequence of `pairs` (chosen ones, then rejected, as `PairTensors` holds them)."""
    n, chosen, rejected = len(pairs), [], []
    for start in range(0, n, batch_size):
        tokens, targets, _ = pair_batch(pairs, range(start, min(start + batch_size, n)), pad_id)
        c, r = token_logps(model, tokens.to(device), targets.to(device)).sum(1).cpu().chunk(2)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen + rejected)


def with_reference(pairs: PairTensors, reference_logps: torch.Tensor | None, pad_id: int, index: list[int]) -> Batch:
    """A pair batch with the reference log-probs of its rows appended (zeros when a reference model scores them)."""
    tokens, targets, last = pair_batch(pairs, index, pad_id)
    if reference_logps is None:
        return tokens, targets, last, torch.zeros(tokens.shape[0])
    rows = torch.tensor(index)
    return tokens, targets, last, torch.cat([reference_logps[rows], reference_logps[rows + len(pairs)]])


@torch.no_grad()
def preference_figures(
    policy: nn.Module, reference: Model | None, reference_logps: torch.Tensor | None, pairs: PairTensors,
    config: DPOConfig, pad_id: int, device: torch.device,
) -> dict[str, float]:
    """Held-out DPO loss, reward accuracy (share of pairs with a positive margin) and mean margin."""
    policy_logps = sequence_logps(policy, pairs, config.batch_size, pad_id, device)
    if reference_logps is None:
        reference_logps = sequence_logps(reference, pairs, config.batch_size, pad_id, device)
    losses, margins = dpo_loss(policy_logps, reference_logps, torch.zeros(()), config.beta, 0.0)
    return {"val_loss": float(losses.mean()), "val_accuracy": float((margins > 0).float().mean()),
            "val_margin": float(margins.mean())}


def dpo(config: DPOConfig) -> PostResult:
    """Align `config.model` to `config.data`'s preferences; the final model goes to out_dir/model."""
    done = finished(config)
    if done is not None:
        return done
    group = join_ranks(config)
    policy, tok, device = load_start(config)
    distributed = shard_policy(config, policy, group)
    pairs = encode_pairs(tok, read_preferences(config.data), config.seq_len)
    val = encode_pairs(tok, read_preferences(config.val_data), config.seq_len) if config.val_data else None
    stored_logps = val_logps = reference = None
    if config.reference == "precomputed":
        start = WithoutAdapters(policy) if config.lora.rank else policy  # not trained yet: it is the starting model
        stored_logps = _reference_logps(config, start, pairs, tok.eos_id, device, write=not (group and group.rank))
        val_logps = sequence_logps(start, val, config.batch_size, tok.eos_id, device) if val else None
    else:
        reference = reference_model(config, policy, device, group)
    data = Batches(len(pairs), config.batch_size, config.seed, partial(with_reference, pairs, stored_logps, tok.eos_id))
    loss_fn = partial(dpo_batch_loss, beta=config.beta, nll_weight=config.nll_weight, reference=reference)
    evaluate = partial(preference_figures, policy, reference, val_logps, val, config, tok.eos_id, device) if val else None
    if distributed is None:
        export = partial(export_trained, policy, config, partial(save, policy, tok))
    else:
        export = partial(export_from_checkpoint, config, policy.config, lambda whole, out: save(whole, tok, out))
    return train_stage(
        config, "dpo", policy, loss_fn, data, device, evaluate=evaluate, export=export,
        counts={"pairs": len(pairs), "truncated_replies": pairs.truncated}, group=group, distributed=distributed,
    )


def _reference_logps(
    config: DPOConfig, reference: Model, pairs: PairTensors, pad_id: int, device: torch.device, *, write: bool = True
) -> torch.Tensor:
    """The starting model's log-probs of the training pairs, computed once and kept in the run dir (a resumed run
    must not recompute them with the trained policy); `write`: this rank writes the file (rank 0)."""
    path = config.run_dir / "reference_logps.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    logps = sequence_logps(reference, pairs, config.batch_size, pad_id, device)
    if not write:
        return logps
    with atomic_open(path, "wb") as f:  # a file object: torch names the archive inside "archive", not after a temp name
        torch.save(logps, f)
    return logps
