"""Pipeline parallelism (torch.distributed.pipelining): a Transformer cut into stages, and a step's micro-batches run through them.

The first stage owns the embedding, the last the final norm, head and loss; parameter names stay the Transformer's.
Validation runs forward only through the stages.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from herd.model import Transformer
from herd.model.masking import packed_mask_and_positions
from herd.model.rope import rope_cos_sin, rope_frequencies
from herd.train.distributed import Distributed
from herd.train.packing import IGNORE_INDEX
from herd.train.trainer import Batch, LossOutput, token_cross_entropy

SCHEDULES = {"1F1B": Schedule1F1B, "GPipe": ScheduleGPipe}


def stage_layers(n_layers: int, stages: int, stage: int) -> range:
    """The layer indices of `stage`: contiguous and as even as possible (earlier stages get fewer when uneven)."""
    return range(stage * n_layers // stages, (stage + 1) * n_layers // stages)


class StageModule(nn.Module):
    """The layers `layer_ids` of a Transformer, plus its embedding on the first stage and norm + head on the last.

    `forward(tokens or hidden, doc_ids)`: packed rows' document masks and positions are rebuilt from doc_ids on
    every stage (as Transformer.forward does), so only the hidden states travel between stages.
    """

    def __init__(self, model: Transformer, layer_ids: range) -> None:
        super().__init__()
        first, last = layer_ids.start == 0, layer_ids.stop == model.config.n_layers
        self.config = model.config
        self.tok_embeddings = model.tok_embeddings if first else None
        self.layers = nn.ModuleDict({str(i): model.layers[i] for i in layer_ids})
        self.norm = model.norm if last else None
        self.output = model.output if last else None
        self._rope_freqs = rope_frequencies(self.config.head_dim, self.config.rope_theta, self.config.rope_scaling)

    def forward(self, h: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
        if self.tok_embeddings is not None:
            h = self.tok_embeddings(h)
        if self._rope_freqs.device != h.device:
            self._rope_freqs = self._rope_freqs.to(h.device)
        mask, positions = packed_mask_and_positions(doc_ids)
        cos, sin = rope_cos_sin(self._rope_freqs, positions)
        for layer in self.layers.values():
            h = layer(h, cos, sin, mask, None)
        if self.output is not None:
            h = self.output(self.norm(h))
        return h


def split_stage(model: Transformer, distributed: Distributed) -> StageModule:
    """This rank's stage of `model` (built on the meta device; the other stages' layers are dropped with it)."""
    stages, stage = distributed.degree("pp"), distributed.coordinate("pp")
    return StageModule(model, stage_layers(model.config.n_layers, stages, stage))


class Pipeline:
    """Runs an optimizer step's micro-batches through this rank's stage with a pipeline schedule.

    Micro-batches are the step's grad-accumulation batches; each one's loss is a sum over its targets (no scaling),
    so the trainer divides the gradients by the step's token count exactly as without pipelining.
    """

    def __init__(self, stage: StageModule, distributed: Distributed, schedule: str) -> None:
        place = (distributed.coordinate("pp"), distributed.degree("pp"), distributed.device)
        group = distributed.group("pp")
        self.stage = PipelineStage(stage, *place, group=group)
        self.schedule_class = SCHEDULES[schedule]
        self._schedules: dict[int, object] = {}
        # forward only, one batch at a time: a stage object of its own, so the training schedule's buffers stay put
        self._forward = ScheduleGPipe(PipelineStage(stage, *place, group=group), 1)

    def forward_backward(self, batches: list[Batch]) -> LossOutput:
        """Forward and backward of all `batches` (one micro-batch each); the loss total is 0 off the last stage."""
        schedule = self._schedules.get(len(batches))
        if schedule is None:
            schedule = self.schedule_class(self.stage, len(batches), loss_fn=summed_loss, scale_grads=False)
            self._schedules[len(batches)] = schedule
        tokens, targets, doc_ids = (torch.cat(parts) for parts in zip(*batches))
        losses: list[torch.Tensor] = []
        inputs = (tokens,) if self.stage.is_first else ()
        schedule.step(*inputs, target=targets, losses=losses, return_outputs=False, doc_ids=doc_ids)
        total = torch.stack(losses).sum().detach() if losses else torch.zeros((), device=targets.device)
        return LossOutput(total, int((targets != IGNORE_INDEX).sum()), {})

    def token_losses(self, batch: Batch) -> torch.Tensor | None:
        """Forward of one batch through all stages (no backward): its next-token losses [B, T] on the last stage,
        None on the others."""
        tokens, targets, doc_ids = batch
        inputs = (tokens,) if self.stage.is_first else ()
        logits = self._forward.step(*inputs, doc_ids=doc_ids)
        return None if logits is None else token_cross_entropy(logits, targets)


def summed_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A micro-batch's loss for the schedule: next-token cross-entropy summed over its targets."""
    return token_cross_entropy(logits, targets).sum()
