"""Fresh weights for a model split over a mesh, equal to `Transformer.init_weights` for the same seed, without ever
holding the whole model: each rank walks `init_plan` and keeps only its shards of each parameter.

Hand-written because the single-process recipe draws every parameter from one CPU generator in sequence, so each
rank replays that stream (DTensor's random ops draw from their own streams and would give other values). Peak memory
is one whole parameter; a parameter this rank holds none of (another pipeline stage's) is drawn in bounded chunks
and dropped. Every rank still draws the whole model's random numbers: time grows with the model, memory does not.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from herd.model import ModelConfig, build_model
from herd.model.transformer import init_plan

CHUNK = 1 << 24
"""Values per draw when skipping a parameter (a multiple of 16, the block of torch's CPU normal sampler)."""


@torch.no_grad()
def init_sharded_weights(model: nn.Module, config: ModelConfig, seed: int) -> None:
    """Initialize this rank's shards of `model` (a Transformer or pipeline stage, plain, FSDP- or tensor-parallel,
    with the Transformer's parameter names) to their values in `build_model(config).init_weights(seed)`."""
    shapes = {name: param.shape for name, param in build_model(config, device="meta").named_parameters()}
    mine = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    for name, std in init_plan(config):
        param = mine.get(name)
        if std is None:
            if param is not None:
                _local(param).fill_(1.0)
        elif param is None:
            skip_normal(generator, shapes[name].numel())
        else:
            whole = torch.randn(shapes[name], generator=generator).clamp_(-3, 3) * std
            if isinstance(param, DTensor):  # each rank cuts its own slice: no communication
                whole = distribute_tensor(whole, param.device_mesh, param.placements, src_data_rank=None).to_local()
            _local(param).copy_(whole)


def skip_normal(generator: torch.Generator, numel: int) -> None:
    """Advance `generator` as `torch.randn(numel, generator=generator)` would, holding at most 2 x CHUNK values.

    torch's CPU sampler draws one uniform per value plus one block of 16 for a ragged tail, and handles draws under 16
    values separately: chunks that are multiples of 16, the last holding at least CHUNK values, consume the same.
    """
    remaining = numel
    while remaining >= 2 * CHUNK:
        torch.randn(CHUNK, generator=generator)
        remaining -= CHUNK
    torch.randn(remaining, generator=generator)


def _local(param: torch.Tensor) -> torch.Tensor:
    return param.to_local() if isinstance(param, DTensor) else param
