"""Chunked linear + cross-entropy: the head and the loss together, without the [tokens, vocab] logits in memory.

Hand-written (torch has no fused linear cross-entropy; Liger's kernels are Triton, GPU-only): rows go through the
head a chunk at a time, and each chunk's gradient (softmax - one-hot) is formed in place in the forward pass and
multiplied into the hidden-state and weight gradients at once. One exp pass instead of two, no [tokens, vocab]
logits, log-softmax or gradient tensors (on CPU such fresh large buffers are page-faulted in on every step).
On CUDA each chunk's softmax and gradient are one compiled function: inductor fuses them into kernels that read the
compute-dtype logits and write their gradient, where eager ops make an fp32 copy and pass over it several times.

Per-position losses (validation, DPO's log-probabilities) come from the same chunks; there the gradient of each row
is weighted differently, so their backward pass recomputes each chunk's logits instead of forming it in the forward.

A head sharded by vocabulary rows (tensor parallelism) runs the same loop on its own rows, Megatron-style: each
chunk's max, sum of exponentials and target logit are all-reduced over the shard group, and the hidden states'
gradient is summed over it; the logits are never gathered. (torch's `loss_parallel` needs the backward pass inside
its context manager too, which the shared training loop does not enter.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard

from herd.errors import HerdError
from herd.model.lazy_compile import compiled
from herd.model.cpu_tuning import can_prepack, prepack, prepacked_matmul
from herd.train.packing import IGNORE_INDEX

CHUNK_ELEMENTS = {"cpu": 2**22, "cuda": 2**27}
"""Logits per chunk, eager: 16 MB fp32 on CPU, 512 MB on GPU. A compiled chunk holds no fp32 copy, so it takes twice
the rows (bf16: 4 bytes per logit against 6): half the passes over the head's fp32 gradient sum."""
COMPILED_DEVICES = ("cuda",)
"""Device types whose chunks run compiled. CPU keeps its eager in-place ops, faster there than compiled."""
MIN_CHUNK_ROWS = 256
"""Rows per chunk at least, whatever the vocabulary: fewer make the head's GEMMs slow."""


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over targets != IGNORE_INDEX of cross-entropy(hidden @ weight.T, target), in fp32.

    hidden [..., dim], weight [vocab, dim], targets [...]. The matmuls run in the autocast dtype when autocast is on
    (as `nn.Linear` would), the softmax in fp32. Equal to `F.cross_entropy(F.linear(hidden, weight).float(), targets,
    reduction="sum")`, gradients included. A DTensor weight sharded by vocabulary rows (a tensor-parallel head) gives
    the same loss on every rank of its mesh, from the hidden states all of them hold.
    """
    if not torch.is_grad_enabled():
        hidden, weight = hidden.detach(), weight.detach()
    hidden, weight, chunking = _chunking(hidden, weight)
    with torch.autocast(chunking.device, enabled=False):
        return _LinearCrossEntropy.apply(hidden.flatten(0, -2), weight, targets.flatten(), chunking)


def linear_token_losses(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
    vocab_shard: tuple[dist.ProcessGroup, int] | None = None,
) -> torch.Tensor:
    """Cross-entropy (fp32) of hidden @ weight.T at every position of targets [...], 0 where ignored, from the chunks
    of `linear_cross_entropy` (a sharded head too). Gradients flow: the backward pass recomputes each chunk's logits
    instead of keeping them. Without gradients the peak memory is a chunk's, not the whole logits'. `vocab_shard`
    (group, first row): a plain `weight` that is this rank's rows of a head split over `group` (tensor-parallel
    inference, herd.model.tensor_parallel), as a DTensor head's are."""
    hidden, weight, chunking = _chunking(hidden, weight, vocab_shard)
    with torch.autocast(chunking.device, enabled=False):
        losses = _LinearTokenLosses.apply(hidden.flatten(0, -2), weight, targets.flatten(), chunking)
    return losses.view(targets.shape)


@dataclass(frozen=True)
class _Chunking:
    """How a call's chunks run: device type, compute dtype, rows per chunk, compiled or eager, and for a sharded
    head the group its rows are split over and the vocabulary index of this rank's first row."""

    device: str
    compute: torch.dtype
    rows: int
    fused: bool
    group: dist.ProcessGroup | None
    start: int

    def softmax(
        self, logits: torch.Tensor, targets: torch.Tensor, want_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """`_chunk_softmax` of one chunk, compiled where `fused` (its rows vary: the last chunk is short)."""
        function = compiled(_chunk_softmax, dynamic=None) if self.fused else _chunk_softmax
        return function(logits, targets, self.start, self.group, want_grad)


def _chunking(
    hidden: torch.Tensor, weight: torch.Tensor, vocab_shard: tuple[dist.ProcessGroup, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, _Chunking]:
    """The hidden states and weight rows this rank computes with (for a head sharded by vocabulary rows: the whole
    hidden states, its own rows), and how its chunks run."""
    device = hidden.device.type
    group, start = vocab_shard or (None, 0)
    if isinstance(weight, DTensor):
        hidden, weight, group, start = _vocab_shard(hidden, weight)
    compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    # a sharded head's all-reduces are traced into the compiled chunk (torch's functional collectives)
    fused = device in COMPILED_DEVICES and not torch.compiler.is_compiling()
    return hidden, weight, _Chunking(device, compute, chunk_rows(weight.shape[0], device, fused), fused, group, start)


def _vocab_shard(
    hidden: torch.Tensor, weight: DTensor
) -> tuple[torch.Tensor, torch.Tensor, dist.ProcessGroup, int]:
    """For a head sharded by vocabulary rows: the whole hidden states, this rank's rows of the weight, the group the
    rows are split over and the vocabulary index of this rank's first row."""
    mesh = weight.device_mesh
    if mesh.ndim != 1 or tuple(weight.placements) != (Shard(0),):
        raise HerdError(f"a sharded head must split its vocabulary rows over one mesh dim, not {weight.placements}")
    # DTensor's Shard(0) splits as torch.chunk does: every rank but the last holds ceil(vocab / ranks) rows
    start = mesh.get_local_rank() * -(-weight.shape[0] // mesh.size())
    whole = hidden.full_tensor() if isinstance(hidden, DTensor) else hidden
    return whole, weight.to_local(), mesh.get_group(), start


def chunk_rows(vocab_size: int, device_type: str, fused: bool) -> int:
    """Rows of hidden states that go through the head together, for a vocabulary of `vocab_size` on a device type,
    in compiled chunks (`fused`) or eager ones."""
    elements = CHUNK_ELEMENTS.get(device_type, CHUNK_ELEMENTS["cuda"]) * (2 if fused else 1)
    return max(MIN_CHUNK_ROWS, elements // vocab_size)


def chunk_bytes(tokens: int, vocab_size: int, device_type: str, compute_bytes: int) -> int:
    """Peak bytes of one chunk of the head + loss over `tokens` rows on one device (logits and their gradient)."""
    fused = device_type in COMPILED_DEVICES
    rows = min(tokens, chunk_rows(vocab_size, device_type, fused))
    return rows * vocab_size * (2 * compute_bytes if fused else 4 + compute_bytes)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunking: _Chunking):
        """Casts to the compute dtype happen here, not in autograd: the weight gradient sums chunks in fp32 and is
        scaled in fp32, then cast to the weight's dtype (an fp32 weight's gradient is never rounded to bf16)."""
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        losses, grad_hidden, grad_weight = _losses_and_grads(hidden, weight, targets, chunking, want_hidden, want_weight)
        hidden_dtype, weight_dtype = hidden.dtype, weight.dtype
        ctx.grads, ctx.dtypes = (grad_hidden, grad_weight), (hidden_dtype, weight_dtype)
        return losses.sum()

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        """The gradients formed in the forward pass, scaled in place (one backward per forward: they are dropped).

        A scale of 1 (a plain `loss.backward()`) is skipped where reading it is free: on CPU it saves two passes.
        """
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy supports one backward pass per forward (no retain_graph)")
        (grad_hidden, grad_weight), (hidden_dtype, weight_dtype) = ctx.grads, ctx.dtypes
        ctx.grads = None
        unit = grad_total.device.type == "cpu" and float(grad_total) == 1.0

        def finish(grad: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
            """Scaled in its accumulation dtype, then cast to its input's dtype."""
            if grad is None:
                return None
            if not unit:
                grad.mul_(grad_total.to(grad.dtype))
            return grad.to(dtype)

        return finish(grad_hidden, hidden_dtype), finish(grad_weight, weight_dtype), None, None


def _chunks(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each chunk of `rows` rows: its first row's index, hidden states, targets and logits (hidden @ weight.T).

    On a CPU whose oneDNN runs the weight's dtype (`herd.model.cpu_tuning.can_prepack`) the weight is reordered once
    per call, which the chunks' matmuls repay (a plain bf16 matmul reorders it at every chunk, into fresh buffers).
    """
    packed = prepack(weight, rows) if can_prepack(weight) else None
    for first in range(0, hidden.shape[0], rows):
        h = hidden[first : first + rows]
        yield first, h, targets[first : first + rows], h @ weight.T if packed is None else prepacked_matmul(h, packed)


def _losses_and_grads(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunking: _Chunking, want_hidden: bool,
    want_weight: bool, row_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Each row's loss (fp32) and, as asked, the gradients of the hidden states (compute dtype) and of the weight
    (summed over chunks in fp32) of the rows' losses times `row_scale` (1 when None), a chunk at a time."""
    hidden, weight = hidden.to(chunking.compute), weight.to(chunking.compute)
    grad_hidden = torch.empty_like(hidden) if want_hidden else None
    grad_weight = None  # the first chunk's product, then the others added to it
    losses = []
    for first, h, t, logits in _chunks(hidden, weight, targets, chunking.rows):
        chunk_losses, grad, safe, mine = chunking.softmax(logits, t, want_hidden or want_weight)
        losses.append(chunk_losses)
        if grad is None:
            continue
        grad.scatter_add_(1, safe, -mine.to(grad.dtype)[:, None])  # minus the one-hot target
        if row_scale is not None:
            grad.mul_(row_scale[first : first + len(h), None].to(grad.dtype))
        if want_hidden:
            torch.mm(grad, weight, out=grad_hidden[first : first + len(h)])
        if want_weight:
            if grad_weight is None:
                grad_weight = (grad.T @ h).float()
            elif grad_weight.dtype == h.dtype:
                grad_weight.addmm_(grad.T, h)
            else:
                grad_weight.add_(grad.T @ h)
    if want_weight and grad_weight is None:  # no rows
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
    if want_hidden and chunking.group is not None:
        dist.all_reduce(grad_hidden, group=chunking.group)  # each shard's rows add their part
    return torch.cat(losses) if losses else targets.new_zeros(0, dtype=torch.float32), grad_hidden, grad_weight


class _LinearTokenLosses(torch.autograd.Function):
    """Each row's loss; the backward pass recomputes each chunk's logits (the forward keeps none of them)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunking: _Chunking):
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunking = chunking
        return _losses_and_grads(hidden, weight, targets, chunking, False, False)[0]

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor):
        hidden, weight, targets = ctx.saved_tensors
        _, grad_hidden, grad_weight = _losses_and_grads(
            hidden, weight, targets, ctx.chunking, ctx.needs_input_grad[0], ctx.needs_input_grad[1], grad_losses
        )
        return (None if grad_hidden is None else grad_hidden.to(hidden.dtype),
                None if grad_weight is None else grad_weight.to(weight.dtype), None, None)


def _chunk_softmax(
    logits: torch.Tensor, targets: torch.Tensor, start: int, group: dist.ProcessGroup | None, want_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """One chunk's losses per row, in fp32 (0 where ignored), from its logits [rows, vocab (this shard's)] in the
    compute dtype; with want_grad its softmax in that dtype (zero on ignored rows), the gradient once the caller
    subtracts the one-hot target: each row's target column in this shard and whether the shard holds it are returned
    for that."""
    dtype, logits = logits.dtype, logits.float()
    valid = targets != IGNORE_INDEX
    mine = valid & (targets >= start) & (targets < start + logits.shape[1])  # targets among this shard's rows
    safe = torch.where(mine, targets - start, 0)[:, None]
    picked = torch.where(mine, logits.gather(1, safe)[:, 0], 0.0)
    peak = logits.amax(dim=-1, keepdim=True)
    if group is not None:
        dist.all_reduce(picked, group=group)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
    if torch.compiler.is_compiling():
        # out of place: inductor fuses it anyway, and writing the input (fp32 logits: `.float()` aliases them) costs
        # a copy back and, in torch 2.11, read the targets' logits after the shift
        exps = (logits - peak).exp()
    else:
        exps = _exp_(logits.sub_(peak))  # in place: the chunk's only exp pass
    sums = exps.sum(dim=-1)
    if group is not None:
        dist.all_reduce(sums, group=group)
    losses = torch.where(valid, peak[:, 0] + sums.log() - picked, 0.0)
    if not want_grad:
        return losses, None, safe, mine
    softmax = exps.mul_((valid / sums)[:, None])
    return losses, softmax.to(dtype), safe, mine


def _exp_(x: torch.Tensor) -> torch.Tensor:
    """exp of x in place. On CPU as 2^(x log2 e), faster than torch's fp32 exp_ there, within 1e-6 relative; on GPUs
    the pass is memory-bound and the multiply a cost."""
    return x.mul_(math.log2(math.e)).exp2_() if x.device.type == "cpu" else x.exp_()
