"""Pipeline parallelism (torch.distributed.pipelining): a Transformer cut into stages, and a step's micro-batches run through them.

The layers split into pp x pp_stages_per_rank stages; rank r holds stages r, r + pp, ... (one for 1F1B and GPipe,
several for the interleaved schedules). The first stage owns the embedding, the last the final norm, head and loss.
A rank's `PipelineRank` keeps the Transformer's parameter names for its stages together, so init, the optimizer and
checkpoints see one model whatever the layout. Validation runs forward only through the stages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
    ScheduleLoopedBFS,
)

from herd.model import Transformer
from herd.train.distributed import MULTI_STAGE_SCHEDULES, Distributed
from herd.train.fused_loss import linear_cross_entropy, linear_token_losses
from herd.train.losses import Batch, LossOutput
from herd.train.packing import IGNORE_INDEX
from herd.train.parallelize import gathered

SCHEDULES = {
    "1F1B": Schedule1F1B, "GPipe": ScheduleGPipe, "Interleaved1F1B": ScheduleInterleaved1F1B, "LoopedBFS": ScheduleLoopedBFS
}


def stage_layers(n_layers: int, stages: int, stage: int) -> range:
    """The layer indices of `stage`: contiguous and as even as possible (earlier stages get fewer when uneven)."""
    return range(stage * n_layers // stages, (stage + 1) * n_layers // stages)


class StageModule(Transformer):
    """The blocks `layer_ids` of a Transformer, plus its embedding on the first stage and norm + head on the last:
    `Transformer.forward` over a slice of the model's own blocks, hidden states in and out between stages.

    `forward(tokens or hidden, doc_ids)`: packed rows' document masks and positions are rebuilt from doc_ids on
    every stage, so only the hidden states travel between stages. The last stage returns logits, or with
    `head = False` its final-normed hidden states, for the training and validation losses to apply the head in
    chunks instead of holding the whole logits.
    """

    def __init__(self, model: Transformer, layer_ids: range) -> None:
        nn.Module.__init__(self)
        first, last = layer_ids.start == 0, layer_ids.stop == model.config.n_layers
        self.config, self.layer_ids = model.config, layer_ids
        self.tok_embeddings = model.tok_embeddings if first else None
        self.layers = nn.ModuleList(model.layers[i] for i in layer_ids)
        self.norm = model.norm if last else None
        self.output = model.output if last else None
        self.head = True
        self.register_buffer("rope_freqs", model.rope_freqs.clone(), persistent=False)
        self.row_kernel = model.row_kernel
        self.tp, self.tp_head = model.tp, model.tp_head

    def forward(self, h: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(h, doc_ids=doc_ids, head=self.head)


class PipelineRank(nn.Module):
    """One rank's stages of a Transformer under the Transformer's parameter names (`layers.N...`, the embedding
    when stage 0 is here, norm and head when the last stage is). `stage_ids` and `stage_modules` (not registered as
    submodules: they share these) are what the schedule runs; wrappers that need a module the loop calls (FSDP's
    roots) take the stage modules. Moving the rank or switching train/eval carries the stage modules along."""

    def __init__(self, model: Transformer, stage_ids: list[int], num_stages: int) -> None:
        super().__init__()
        n_layers = model.config.n_layers
        modules = [StageModule(model, stage_layers(n_layers, num_stages, stage)) for stage in stage_ids]
        self.stage_ids, self.num_stages = stage_ids, num_stages
        self.tok_embeddings = modules[0].tok_embeddings
        self.layers = nn.ModuleDict({str(i): model.layers[i] for module in modules for i in module.layer_ids})
        self.norm, self.output = modules[-1].norm, modules[-1].output
        self.stage_modules = modules  # a plain list: the parameters are registered above, once

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's signature
        super()._apply(fn, recurse)
        for module in self.stage_modules:  # their own RoPE buffer and kernel; the shared submodules moved above
            module._apply(fn, recurse=False)
        return self

    def train(self, mode: bool = True) -> PipelineRank:
        super().train(mode)
        for module in self.stage_modules:
            module.train(mode)
        return self


def split_stage(model: Transformer, distributed: Distributed, stages_per_rank: int = 1) -> PipelineRank:
    """This rank's stages of `model` (built on the meta device; the other stages' layers are dropped with it)."""
    pp, rank = distributed.degree("pp"), distributed.coordinate("pp")
    return PipelineRank(model, [rank + k * pp for k in range(stages_per_rank)], pp * stages_per_rank)


class Pipeline:
    """Runs an optimizer step's micro-batches through this rank's stages with a pipeline schedule.

    Micro-batches are the step's grad-accumulation batches; each one's loss is a sum over its targets (no scaling),
    so the trainer divides the gradients by the step's token count exactly as without pipelining. A schedule's
    stages fix the shapes that travel between ranks, so each micro-batch count and shape (sequence-length stages
    change both) gets schedules of its own.
    """

    def __init__(self, rank: PipelineRank, distributed: Distributed, schedule: str) -> None:
        self.rank, self.distributed = rank, distributed
        self.schedule_class = SCHEDULES[schedule]
        self.multi_stage = schedule in MULTI_STAGE_SCHEDULES
        self.is_first = rank.stage_ids[0] == 0
        self._schedules: dict[tuple, object] = {}

    def _stages(self) -> list[PipelineStage] | PipelineStage:
        stages = [
            PipelineStage(module, stage, self.rank.num_stages, self.distributed.device, group=self.distributed.group("pp"))
            for module, stage in zip(self.rank.stage_modules, self.rank.stage_ids, strict=True)
        ]
        return stages if self.multi_stage else stages[0]

    def forward_backward(self, batches: list[Batch]) -> LossOutput:
        """Forward and backward of all `batches` (one micro-batch each); the loss total is 0 off the last stage."""
        key = ("train", len(batches), tuple(batches[0][0].shape))
        schedule = self._schedules.get(key)
        if schedule is None:

            def loss_fn(hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
                # the weight read at each call: under FSDP it is the gathered one only after the stage's forward
                return linear_cross_entropy(hidden, self._last.output.weight, targets)

            schedule = self.schedule_class(self._stages(), len(batches), loss_fn=loss_fn, scale_grads=False)
            self._schedules[key] = schedule
        tokens, targets, doc_ids = (torch.cat(parts) for parts in zip(*batches))
        losses: list[torch.Tensor] = []
        inputs = (tokens,) if self.is_first else ()
        with self._hidden_states_out():
            schedule.step(*inputs, target=targets, losses=losses, return_outputs=False, doc_ids=doc_ids)
        total = torch.stack(losses).sum().detach() if losses else torch.zeros((), device=targets.device)
        return LossOutput(total, int((targets != IGNORE_INDEX).sum()), {})

    def token_losses(self, batch: Batch) -> torch.Tensor | None:
        """Forward of one batch through all stages (no backward): its next-token losses [B, T] on the last stage,
        None on the others."""
        tokens, targets, doc_ids = batch
        key = ("forward", tuple(tokens.shape))
        schedule = self._schedules.get(key)
        if schedule is None:  # stage objects of its own, so the training schedule's buffers stay put
            schedule = (ScheduleLoopedBFS if self.multi_stage else ScheduleGPipe)(self._stages(), 1)
            self._schedules[key] = schedule
        with self._hidden_states_out():
            hidden = schedule.step(*((tokens,) if self.is_first else ()), doc_ids=doc_ids)
        if hidden is None:
            return None
        with gathered(self._last):
            return linear_token_losses(hidden, self._last.output.weight, targets)

    @property
    def _last(self) -> StageModule:
        """This rank's last stage module (the model's last stage, with its norm and head, on the last rank)."""
        return self.rank.stage_modules[-1]

    @contextlib.contextmanager
    def _hidden_states_out(self) -> Iterator[None]:
        """The last stage returns its final-normed hidden states, not logits: the losses apply the head in chunks."""
        self._last.head = False
        try:
            yield
        finally:
            self._last.head = True

