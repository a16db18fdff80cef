"""Tensor-parallel inference: which dim of each parameter is split over the ranks, how it is cut, and the collectives
of the sharded forward (one all-reduce after `wo` and one after `w2` per block, one for the vocab-parallel embedding,
an all-gather of the vocab-parallel logits).

Plain torch.distributed on local shards (gpt-fast's way), not the DTensor plans of herd.train.parallelize: each rank
holds ordinary tensors, so int8/fp8 linears, the contiguous and paged KV caches (local KV heads only) and the engine
work on them unchanged, and a decode step pays no DTensor dispatch. The split is Meta's reference (llama_models'
llama3: ColumnParallelLinear wq/wk/wv/w1/w3/output, RowParallelLinear wo/w2, VocabParallelEmbedding), so rank r of
an N-way run holds exactly what `consolidated.0r.pth` of an MP=N checkpoint holds.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from herd.errors import HerdError
from herd.model.config import ModelConfig

SHARD_DIMS: dict[str, int | None] = {
    "tok_embeddings": 0,  # vocab-parallel rows (Llama 3's VocabParallelEmbedding; Llama 2 split dim 1)
    "attention.wq": 0,
    "attention.wk": 0,
    "attention.wv": 0,
    "attention.wo": 1,
    "feed_forward.w1": 0,
    "feed_forward.w3": 0,
    "feed_forward.w2": 1,
    "output": 0,  # vocab-parallel head: each rank's logits for its slice of the vocabulary
    "attention_norm": None,
    "ffn_norm": None,
    "norm": None,
}
"""Split dim of each parameter's module (weight [out, in]): 0 column-parallel / vocab rows, 1 row-parallel, None
replicated."""

_MODULE = re.compile(r"^(?:layers\.\d+\.)?(.+)\.(?:weight|scale)$")


def shard_dim(name: str) -> int | None:
    """Split dim of herd state-dict entry `name` ("layers.3.attention.wk.weight" -> 0, "norm.weight" -> None).

    An int8 linear's per-output-channel "scale" [out] follows its weight's dim 0 and is whole for row-parallel ones.
    """
    match = _MODULE.match(name)
    if match is None or match.group(1) not in SHARD_DIMS:
        raise HerdError(f"tensor parallelism: no split is defined for parameter {name!r}")
    dim = SHARD_DIMS[match.group(1)]
    return None if name.endswith(".scale") and dim == 1 else dim


def shard_bounds(size: int, rank: int, world: int, what: str = "dimension") -> tuple[int, int]:
    """[start, stop) of rank `rank`'s contiguous chunk when `size` is cut into `world` equal chunks."""
    if size % world:
        raise HerdError(
            f"tensor parallelism: {what} of {size} is not divisible by --tp {world}; use a --tp that divides it"
        )
    step = size // world
    return rank * step, (rank + 1) * step


def shard(tensor: torch.Tensor, dim: int | None, rank: int, world: int) -> torch.Tensor:
    """Rank `rank`'s chunk of `tensor` along `dim` (a view; the whole tensor when dim is None)."""
    if dim is None:
        return tensor
    start, stop = shard_bounds(tensor.shape[dim], rank, world)
    return tensor.narrow(dim, start, stop - start)


def check_config(config: ModelConfig, world: int) -> None:
    """One-line HerdError unless `world` ranks can split the heads, KV heads, vocabulary and FFN of `config`."""
    for what, size in (("n_heads", config.n_heads), ("n_kv_heads", config.kv_heads),
                       ("vocab_size", config.vocab_size), ("the FFN hidden size", config.ffn_hidden_dim)):
        shard_bounds(size, 0, world, f"the model's {what}")


@dataclass(frozen=True)
class TensorParallel:
    """This process's place among the job's ranks (the whole torchrun world is one model replica) and the
    collectives the sharded forward runs."""

    rank: int
    world: int

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the ranks' partial outputs (in place)."""
        dist.all_reduce(x)
        return x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the ranks' `x` (in place): the gradients of a model every rank trains whole."""
        dist.all_reduce(x)
        return x.div_(self.world)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The ranks' slices of the last dim joined in rank order (vocab-parallel logits -> full logits)."""
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=-1)

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's `x` on every rank (in place): the sampled tokens."""
        dist.broadcast(x, src=0)
        return x

    def broadcast_object(self, obj: object = None) -> object:
        """Rank 0's picklable `obj` on every rank (the serving engine's step plan)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self, wait: bool = True) -> None:
        """Leave the job once every rank is done (a process exiting with the group alive aborts); `wait=False`
        leaves at once, when another rank has failed and will not reach the barrier."""
        if dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()


def backend_for(device: str | torch.device) -> str:
    """The process-group backend for a model on `device`: nccl for CUDA, gloo otherwise (a CPU run on a machine
    with GPUs too)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_tensor_parallel(
    tp: int, device: str | torch.device, *, timeout_s: float = 1800.0,
    before_joining: Callable[[torch.device, bool], object] | None = None,
) -> TensorParallel | None:
    """Join torchrun's job as one of `tp` ranks whose model runs on `device` (`backend_for`; "cuda" is this rank's
    GPU, LOCAL_RANK); None for --tp 1 run alone.

    The world must be exactly `tp` ranks: one model replica, every rank running the same program. Every rank checks
    its launch and device first, then runs `before_joining(its device, whether it is rank 0)` (the model's own
    checks: a rank that fails before joining ends alone, where one failing after leaves the others waiting on it).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if tp < 1:
        raise HerdError(f"--tp must be >= 1, got {tp}")
    if tp == 1 and world == 1:
        if before_joining is not None:
            before_joining(torch.device(device), True)
        return None
    if "RANK" not in os.environ:
        raise HerdError(f"--tp {tp} runs under torchrun: torchrun --nproc-per-node {tp} -m herd.cli ... --tp {tp}")
    if world != tp:
        raise HerdError(f"torchrun started {world} processes but --tp is {tp}; make --nproc-per-node equal --tp")
    here = _rank_device(device)
    if not dist.is_initialized():
        if here.type == "cuda":
            if here.index >= torch.cuda.device_count():
                raise HerdError(f"--device {device}: rank {os.environ['RANK']} needs GPU {here.index} but "
                                f"{torch.cuda.device_count()} are visible; use --device cpu or one GPU a rank")
            torch.cuda.set_device(here)
        if before_joining is not None:
            before_joining(here, os.environ["RANK"] == "0")
        dist.init_process_group(backend_for(here), timeout=timedelta(seconds=timeout_s))
    elif before_joining is not None:
        before_joining(here, dist.get_rank() == 0)
    return TensorParallel(dist.get_rank(), world)


@contextlib.contextmanager
def all_ranks_or_none(tp: TensorParallel | None, what: str) -> Iterator[None]:
    """Run the body on every rank, then stop every rank if it failed on any (collective, within the group's
    timeout): a failed rank raises its own error, the others a one-line HerdError with the first failed rank's, so
    none goes on into a collective that a failed rank will never join."""
    if tp is None:
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as caught:  # re-raised below, once the ranks have compared notes
        error = caught
    errors: list[str | None] = [None] * tp.world
    try:
        dist.all_gather_object(errors, None if error is None else f"{type(error).__name__}: {error}")
    except RuntimeError as lost:  # a rank died or hung past the group's timeout
        if error is not None:
            raise error from None
        first = str(lost).splitlines()[0] if str(lost) else type(lost).__name__
        raise HerdError(f"tensor-parallel rank {tp.rank} lost the other ranks after {what} ({first}); "
                        "see their errors") from None
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(errors) if message is not None]
    if failed:
        rank, message = failed[0]
        raise HerdError(f"tensor-parallel rank {rank} failed {what} ({message.splitlines()[0]}); rank {tp.rank} "
                        "stops too")


def _rank_device(device: str | torch.device) -> torch.device:
    """`device` for one of several ranks: "cuda" becomes this rank's GPU (LOCAL_RANK)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def tp_device(tp: TensorParallel | None, device: str | torch.device) -> torch.device:
    """`device` for this rank: "cuda" becomes this rank's GPU (LOCAL_RANK)."""
    return torch.device(device) if tp is None else _rank_device(device)


class VocabParallelEmbedding(nn.Module):
    """This rank's rows [start, start + rows) of the embedding; other ids embed as zeros, the all-reduce sums the
    ranks' rows (exact: one non-zero term per token)."""

    def __init__(self, weight: torch.Tensor, start: int, tp: TensorParallel) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.start, self.tp = start, tp

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        local = tokens - self.start
        outside = (local < 0) | (local >= self.weight.shape[0])
        h = F.embedding(local.masked_fill(outside, 0), self.weight)
        return self.tp.reduce(h.masked_fill_(outside[..., None], 0))


@torch.no_grad()
def parallelize(model: nn.Module, tp: TensorParallel) -> nn.Module:
    """Cut `model`'s weights in place to this rank's slices (SHARD_DIMS) and wire the collectives; returns it. A head
    that does not map to the vocabulary (a reward model's value head) is kept whole on every rank.

    On a model built on "meta" nothing is copied: assign the rank's local state dict afterwards
    (`load_state_dict(local, assign=True)` then `place_buffers`), as herd's loaders do for a whole model.
    """
    config: ModelConfig = model.config
    check_config(config, tp.world)
    tied = config.tie_word_embeddings
    model.tp_head = model.output.out_features == config.vocab_size  # a reward model's value head stays whole
    for name, module in model.named_modules():
        dim = SHARD_DIMS.get(re.sub(r"^layers\.\d+\.", "", name))
        whole = name == "output" and (tied or not model.tp_head)
        if dim is not None and isinstance(module, nn.Linear | nn.Embedding) and not whole:
            local = shard(module.weight, dim, tp.rank, tp.world)
            module.weight = nn.Parameter(local.clone() if local.device.type != "meta" else local, requires_grad=False)
            if isinstance(module, nn.Linear):
                module.out_features, module.in_features = module.weight.shape
    start, _ = shard_bounds(config.vocab_size, tp.rank, tp.world)
    model.tok_embeddings = VocabParallelEmbedding(model.tok_embeddings.weight, start, tp)
    if tied:
        model.output.weight = model.tok_embeddings.weight
    for layer in model.layers:
        layer.attention.n_heads //= tp.world
        layer.attention.n_kv_heads //= tp.world
        layer.tp = tp
    model.tp = tp
    return model
