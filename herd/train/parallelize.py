"""`parallelize`: training wrappers on a plain model, in a fixed order: tensor parallel -> activation checkpointing
-> compile -> FSDP2. The model stays plain (herd.model); this is the one place that knows about the mesh.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from torch.utils.checkpoint import checkpoint

from herd.errors import HerdError
from herd.model import ModelConfig
from herd.train.distributed import Distributed


def block_plan(sequence_parallel: bool) -> dict[str, object]:
    """Megatron-style: q/k/v and SwiGLU's w1/w3 split their outputs (heads, hidden units) over the tp ranks, wo and
    w2 split their inputs and sum the partial outputs. With sequence parallelism the residual stream and the norms
    are split along the sequence between those, so the all-reduces become reduce-scatter + all-gather pairs."""
    if not sequence_parallel:
        return {
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w3": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(),
        }
    gather = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
    return {
        "attention_norm": SequenceParallel(),
        "attention": PrepareModuleInput(  # (x, cos, sin, context): only x is split
            input_layouts=(Shard(1), *[None] * 3), desired_input_layouts=(Replicate(), *[None] * 3)
        ),
        "attention.wq": ColwiseParallel(),
        "attention.wk": ColwiseParallel(),
        "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
        "ffn_norm": SequenceParallel(),
        "feed_forward": gather,
        "feed_forward.w1": ColwiseParallel(),
        "feed_forward.w3": ColwiseParallel(),
        "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
    }


def check_layout(config: ModelConfig, distributed: Distributed, stages_per_rank: int = 1) -> None:
    """Fail with the option to change when the model cannot be split the way the mesh asks."""
    tp, pp = distributed.degree("tp"), distributed.degree("pp")
    for name, size in (
        ("n_heads", config.n_heads),
        ("n_kv_heads", config.kv_heads),
        ("ffn hidden size", config.ffn_hidden_dim),
    ):
        if size % tp:
            raise HerdError(f"parallel.tp={tp} does not divide the model's {name} ({size}); pick a tp that does")
    if config.n_layers < pp * stages_per_rank:
        raise HerdError(
            f"parallel.pp={pp} x parallel.pp_stages_per_rank={stages_per_rank} stages exceed the model's "
            f"{config.n_layers} layers; lower them"
        )
    if config.tie_word_embeddings and tp * pp > 1:
        raise HerdError(
            "tied word embeddings are not supported with parallel.tp or parallel.pp above 1; untie or set them to 1"
        )


def parallelize(
    model: nn.Module,
    distributed: Distributed,
    *,
    activation_checkpointing: bool,
    compile: bool,
    sequence_parallel: bool = False,
    param_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Apply, in place and keeping parameter names, what the mesh and flags ask for to a Transformer or pipeline stage.

    Call on the meta device before `to_empty`; FSDP runs in `param_dtype` and reduces gradients in fp32, summed
    (not averaged) over the data-parallel ranks: the trainer divides by the step's global token count.
    """
    if distributed.degree("tp") > 1:
        apply_tensor_parallel(model, distributed.mesh["tp"], sequence_parallel)
    for block in model.layers.children():
        if activation_checkpointing:
            block.forward = checkpointed(block.forward)
        if compile:
            block.compile()
    if distributed.degree("dp") > 1:
        apply_fsdp(model, distributed.mesh["dp"], param_dtype)
    return model


def checkpointed(forward: Callable) -> Callable:
    """`forward` recomputed in the backward pass instead of keeping its activations.

    A function of herd's, not a functools.partial of torch's `checkpoint`: torch.compile never traces torch's own
    frames, so a compiled block whose forward began in torch's code compiled nothing (silently); from this frame it
    traces the checkpoint as one region of the graph.
    """

    def checkpointed_forward(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return checkpointed_forward


@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """`module`'s own FSDP-sharded weights gathered whole in the body, sharded again after (nothing to do where FSDP
    does not wrap it). For code that reads a root's weights outside its forward: without gradients, FSDP may have
    sharded them again when the forward ended (a pipeline stage's, for one)."""
    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def apply_tensor_parallel(model: nn.Module, mesh: DeviceMesh, sequence_parallel: bool) -> None:
    """Shard the embedding by vocabulary rows, the head by output rows (its forward gathers the logits whole; the
    training loss, herd.train.fused_loss, works on each rank's rows instead), each block per
    `block_plan`; with sequence parallelism the hidden states between blocks (and stages) are split along the sequence."""
    between = Shard(1) if sequence_parallel else Replicate()
    plan = {}
    if model.tok_embeddings is not None:
        plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=between)
    if model.output is not None:
        if sequence_parallel:
            plan["norm"] = SequenceParallel()
        plan["output"] = ColwiseParallel(input_layouts=between, output_layouts=Replicate())
    parallelize_module(model, mesh, plan)
    for block in model.layers.children():
        parallelize_module(block, mesh, block_plan(sequence_parallel))


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, param_dtype: torch.dtype) -> None:
    """FSDP2 per block (gathered one block at a time) and at each root the loop calls (embedding, norm, head): the
    model, or each of a pipeline rank's stage modules.

    A block's gathered weights are freed after its forward and gathered again for its backward, except where that
    buys nothing (as torchtitan does): the last block, whose backward comes next, and every block of a pipeline
    stage, which each micro-batch's forward and backward would otherwise gather anew: fewer all-gathers per step.
    """
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    blocks = list(model.layers.children())
    stages = getattr(model, "stage_modules", None)
    for index, module in enumerate([*blocks, *(stages or [model])]):
        # roots (after the blocks) keep theirs gathered anyway: their backward comes last in the forward's wake
        reshard = stages is None and index < len(blocks) - 1
        fully_shard(module, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
