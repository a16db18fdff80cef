"""The losses every training stage builds on: next-token cross-entropy per token and summed, and the summed-loss
type the training loop averages over a step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from herd.model import Transformer
from herd.train.fused_loss import linear_cross_entropy, linear_token_losses
from herd.train.packing import IGNORE_INDEX
from herd.train.parallelize import gathered

Batch = tuple[torch.Tensor, ...]


class LossOutput(NamedTuple):
    """A loss summed (not averaged) over a micro-batch, so accumulation can average over the whole step."""

    total: torch.Tensor
    """Sum of the per-unit losses (per token for language modelling)."""
    count: int
    """Units summed; the step's loss is the sum over its micro-batches divided by the summed counts."""
    metrics: dict[str, float]
    """Extra figures to log (summed over a step's micro-batches)."""


LossFn = Callable[[nn.Module, Batch], LossOutput]


def token_losses(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Next-token cross-entropy (nats) of every position [B, T] of a packed (tokens, targets, doc_ids) batch; 0 where
    ignored. A Transformer's head goes a chunk of rows at a time (herd.train.fused_loss.linear_token_losses), never
    holding the whole logits; with gradients, its backward pass recomputes them."""
    tokens, targets, doc_ids = batch
    if not applies_its_head(model):
        return token_cross_entropy(model(tokens, doc_ids=doc_ids), targets)
    hidden = model(tokens, doc_ids=doc_ids, head=False)
    # with gradients FSDP keeps a root's weights gathered until its backward (which reads them again)
    with contextlib.nullcontext() if torch.is_grad_enabled() else gathered(model):
        return linear_token_losses(hidden, model.output.weight, targets)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (nats, fp32) of logits [B, T, V] against targets [B, T]; 0 where a target is IGNORE_INDEX."""
    losses = F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return losses.view_as(targets)


def next_token_loss(model: nn.Module, batch: Batch) -> LossOutput:
    """Pretraining's loss: cross-entropy summed over the targets that are not IGNORE_INDEX.

    A Transformer takes the chunked head + loss, which never holds the whole logits: under FSDP2 too (the model is
    the root FSDP module, whose weights, head included, stay gathered from its forward until its backward), and
    under tensor parallelism on each rank's vocabulary rows. Another module goes through its logits and
    `token_cross_entropy`.
    """
    tokens, targets, doc_ids = batch
    count = int((targets != IGNORE_INDEX).sum())
    if not applies_its_head(model):
        return LossOutput(token_losses(model, batch).sum(), count, {})
    hidden = model(tokens, doc_ids=doc_ids, head=False)
    return LossOutput(linear_cross_entropy(hidden, model.output.weight, targets), count, {})


def applies_its_head(model: object) -> bool:
    """Whether `model` is a Transformer whose head the losses apply themselves (`forward(head=False)`)."""
    return isinstance(model, Transformer) and isinstance(model.output, nn.Linear)
