"""A rank's place in a torchrun job: the process group, the ("pp", "dp", "tp") device mesh and what crosses ranks.

Owns the parallel layout config, the loss sums and gradient norm over all ranks, and the hang watchdog.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor

from herd.errors import HerdError
from herd.model.tensor_parallel import backend_for

MESH_DIMS = ("pp", "dp", "tp")
MULTI_STAGE_SCHEDULES = ("Interleaved1F1B", "LoopedBFS")
"""Pipeline schedules that run several stages on each rank."""
PIPELINE_MIN_TORCH = "2.11"
"""The oldest torch whose pipelining herd's tests pass on (2.11 and 2.13 tested): under 2.9.1 the stages' first shape
exchange fails (gloo: "Received data size doesn't match expected size"); 2.10 is untested."""


@dataclass
class ParallelConfig:
    """How the job's ranks split the work: a pp x dp x tp device mesh whose product is the world size."""

    dp_shard: int = -1
    """Data-parallel degree (FSDP2 shards parameters, gradients and optimizer state); -1 takes the ranks tp and pp leave."""
    tp: int = 1
    """Tensor-parallel degree (DTensor: attention heads and SwiGLU units split across ranks); keep it within a node."""
    pp: int = 1
    """Pipeline-parallel degree: the layers split into pp stages, a step's grad_accum micro-batches flow through them."""
    sequence_parallel: bool = True
    """Under tp, split the residual stream and norms along the sequence too (less activation memory, same traffic)."""
    pp_schedule: Literal["1F1B", "GPipe", "Interleaved1F1B", "LoopedBFS"] = "1F1B"
    """Pipeline schedule. 1F1B holds fewer activations than GPipe and needs micro-batches >= pp. Interleaved1F1B
    and LoopedBFS run pp_stages_per_rank >= 2 stages on each rank (rank r holds stages r, r + pp, ...): interleaving
    shrinks the pipeline bubble by that factor."""
    pp_stages_per_rank: int = 1
    """Pipeline stages on each rank: 1 for 1F1B and GPipe, 2 or more for Interleaved1F1B and LoopedBFS."""
    timeout_s: float = 600.0
    """A collective waiting longer than this fails the job (torchrun can then restart it)."""

    def __post_init__(self) -> None:
        for name in ("tp", "pp"):
            if getattr(self, name) < 1:
                raise HerdError(f"parallel.{name} must be at least 1, got {getattr(self, name)}")
        if self.dp_shard < 1 and self.dp_shard != -1:
            raise HerdError(f"parallel.dp_shard must be at least 1, or -1 for the ranks left, got {self.dp_shard}")
        if self.timeout_s <= 0:
            raise HerdError(f"parallel.timeout_s must be positive, got {self.timeout_s}")
        if self.pp > 1 and torch.__version__ < PIPELINE_MIN_TORCH:
            raise HerdError(
                f"parallel.pp={self.pp} needs torch >= {PIPELINE_MIN_TORCH} (this is {torch.__version__}); upgrade "
                "torch or set parallel.pp=1"
            )
        multi = self.pp_schedule in MULTI_STAGE_SCHEDULES
        if multi != (self.pp_stages_per_rank > 1) or self.pp_stages_per_rank < 1:
            want = "2 or more" if multi else "1"
            raise HerdError(
                f"parallel.pp_schedule={self.pp_schedule} runs {want} stage(s) per rank, got parallel.pp_stages_per_rank="
                f"{self.pp_stages_per_rank}; change one (multi-stage schedules: {', '.join(MULTI_STAGE_SCHEDULES)})"
            )

    def check_micro_batches(self, counts: Iterable[int]) -> None:
        """Fail, naming what to change, when the pipeline schedule cannot run a step of one of these micro-batch counts."""
        if self.pp == 1:
            return
        for count in counts:
            if self.pp_schedule == "1F1B" and count < self.pp:
                raise HerdError(
                    f"parallel.pp_schedule=1F1B needs micro-batches (grad_accum) >= parallel.pp={self.pp}, got {count}; "
                    "raise grad_accum or use parallel.pp_schedule=GPipe"
                )
            rounds = max(1, count // self.pp)
            if self.pp_schedule == "Interleaved1F1B" and count % rounds:
                raise HerdError(
                    f"parallel.pp_schedule=Interleaved1F1B needs micro-batches (grad_accum) divisible by "
                    f"max(1, micro-batches // parallel.pp) = {rounds}, got {count}; use a multiple of parallel.pp={self.pp}"
                )

    def degrees(self, world_size: int) -> tuple[int, int, int]:
        """(pp, dp, tp) for a job of `world_size` ranks."""
        dp = world_size // (self.tp * self.pp) if self.dp_shard == -1 else self.dp_shard
        if dp < 1 or dp * self.tp * self.pp != world_size:
            raise HerdError(
                f"parallel.dp_shard={self.dp_shard} x parallel.tp={self.tp} x parallel.pp={self.pp} must equal the "
                f"{world_size} rank(s) launched; change them or torchrun's --nproc_per_node"
            )
        return self.pp, dp, self.tp


@dataclass
class Distributed:
    """This process's rank, device and mesh; `mesh` is None when the process trains alone."""

    rank: int
    world_size: int
    device: torch.device
    mesh: DeviceMesh | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the metrics, plots, manifest and exported model."""
        return self.rank == 0

    def degree(self, dim: str) -> int:
        return 1 if self.mesh is None else self.mesh[dim].size()

    def coordinate(self, dim: str) -> int:
        """This rank's index along mesh dimension `dim`."""
        return 0 if self.mesh is None else self.mesh.get_local_rank(dim)

    def group(self, dim: str) -> dist.ProcessGroup | None:
        """The process group along `dim`, or None where that dimension has one rank."""
        return None if self.degree(dim) == 1 else self.mesh[dim].get_group()

    @property
    def owns_loss(self) -> bool:
        """One rank per data-parallel replica counts its loss: the first tensor-parallel rank of the last stage."""
        return self.coordinate("tp") == 0 and self.coordinate("pp") == self.degree("pp") - 1

    def sum_over_replicas(self, values: Sequence[float | torch.Tensor]) -> list[float]:
        """Sum each value over the data-parallel replicas, counting only the loss-owning rank of each."""
        if self.mesh is None:
            return [float(v) for v in values]
        vector = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        if not self.owns_loss:
            vector.zero_()
        dist.all_reduce(vector)
        return vector.tolist()

    def ranks_where(self, flag: bool) -> list[int]:
        """The ranks on which `flag` is true (collective: every rank calls it)."""
        if self.mesh is None:
            return [0] if flag else []
        flags = torch.zeros(self.world_size, dtype=torch.int32, device=self.device)
        flags[self.rank] = int(flag)
        dist.all_reduce(flags)
        return [rank for rank, value in enumerate(flags.tolist()) if value]

    def barrier(self) -> None:
        if self.mesh is not None:
            dist.barrier()

    def close(self) -> None:
        if self.mesh is not None and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(parallel: ParallelConfig, device: str) -> Distributed:
    """Join the torchrun job named by RANK / WORLD_SIZE / LOCAL_RANK (or run alone without them) and build the mesh.

    Backend nccl on CUDA, gloo on CPU (backend_for); each rank takes GPU LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    shape = parallel.degrees(world_size)
    if world_size == 1:
        return Distributed(0, 1, pick_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = pick_device(device, local_rank)
    if here.type == "cuda":
        torch.cuda.set_device(here)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(here), timeout=timedelta(seconds=parallel.timeout_s))
    mesh = init_device_mesh(here.type, shape, mesh_dim_names=MESH_DIMS)
    return Distributed(rank, world_size, here, mesh)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto`: this rank's GPU when there is one, else the CPU; `cuda` means this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HerdError(f"device={name} but no CUDA GPU is visible; set device=cpu or device=auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


# --- gradients ---------------------------------------------------------------------------------------------
def grad_groups(params: Sequence[nn.Parameter]) -> list[list[nn.Parameter]]:
    """Parameters that have gradients, grouped so each group's gradients live on one mesh (plain tensors together).

    Foreach kernels and norms run per group: one DTensor op cannot mix meshes, nor DTensors with plain tensors.
    """
    groups: dict[object, list[nn.Parameter]] = {}
    for param in params:
        if param.grad is not None:
            key = (param.device_mesh, tuple(param.placements)) if isinstance(param, DTensor) else None
            groups.setdefault(key, []).append(param)
    return list(groups.values())


def clip_scale(
    groups: list[list[nn.Parameter]], max_norm: float, pp_group: dist.ProcessGroup | None, divide_by: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global L2 norm of the gradients of `grad_groups` divided by `divide_by`, and the one factor that divides
    them by `divide_by` and clips them to `max_norm` (inf: no clipping); `herd.train.optimizer.step_scaled` applies it.

    The norm spans every shard: DTensor norms are made whole over their mesh, then stages add up over `pp_group`.
    """
    norms = []
    for group in groups:
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], foreach=True)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    if not norms:
        return torch.zeros(()), torch.ones(())
    total = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
    if pp_group is not None:
        squared = total.double() ** 2
        dist.all_reduce(squared, group=pp_group)
        total = squared.sqrt().to(total.dtype)
    total = total / divide_by
    return total, (max_norm / (total + 1e-6)).clamp(max=1.0) / divide_by  # torch's clipping coefficient, divided


# --- hangs -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def hang_watchdog(timeout_s: float) -> Iterator[None]:
    """Dump every thread's stack to stderr and exit with status 1 when the body runs longer than `timeout_s` (0: off).

    Every rank arms one around each step, so a hung collective ends each waiting rank with its stacks, and the
    supervisor (torchrun --max-restarts) restarts the job from the last checkpoint.
    """
    if not timeout_s:
        yield
        return
    faulthandler.dump_traceback_later(timeout_s, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
