"""herd-named weights <-> a `Transformer`: check tensors against a config, build a model that takes them.

The model is built on the meta device and takes the tensors by assignment, so memory-mapped checkpoint
tensors become the parameters without a second copy.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from herd.errors import HerdError
from herd.model import ModelConfig, Transformer, build_model
from herd.model.tensor_parallel import TensorParallel, parallelize


def expected_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    """Shape of every weight a checkpoint must hold for `config` (the tied head excluded)."""
    model = build_model(config, device="meta")
    return {name: param.shape for name, param in model.named_parameters()}


def check_state(config: ModelConfig, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a one-line HerdError naming the first missing, unexpected or mis-shaped tensor."""
    expected = expected_shapes(config)
    missing = [name for name in expected if name not in state]
    if missing:
        raise HerdError(
            f"{source} lacks {len(missing)} tensor(s) the config needs (first: {missing[0]}); "
            "the checkpoint is incomplete or its config describes another model"
        )
    tolerated = {"output.weight"} if config.tie_word_embeddings else set()
    unexpected = [name for name in state if name not in expected and name not in tolerated]
    if unexpected:
        raise HerdError(
            f"{source} holds {len(unexpected)} tensor(s) the model does not use (first: {unexpected[0]}); "
            "the checkpoint's config describes another model"
        )
    for name, shape in expected.items():
        if state[name].shape != shape:
            raise HerdError(
                f"{source}: tensor {name} has shape {tuple(state[name].shape)} but the config needs {tuple(shape)}; "
                "the checkpoint's config describes another model"
            )
        if not state[name].is_floating_point():
            raise HerdError(
                f"{source}: tensor {name} is stored as {str(state[name].dtype).removeprefix('torch.')}, but herd "
                "loads floating-point weights only (float32, bfloat16 or float16); convert the checkpoint to one"
            )


def model_from_state(
    config: ModelConfig,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    check_finite: bool = True,
    tp: TensorParallel | None = None,
) -> Transformer:
    """A model whose parameters are `state`'s tensors, moved/cast only where device or dtype differ.

    dtype None keeps each tensor's own dtype. With tied embeddings a stored `output.weight` is ignored.
    `check_finite` refuses weights holding a NaN or an infinity (after the cast, which may overflow). With `tp`
    the tensors are that rank's slices (herd.checkpoint.sharded) and the model is the rank's.
    """
    model = build_model(config, device="meta")
    if tp is None:
        check_state(config, state, source)
    else:
        parallelize(model, tp)
    tensors = {name: state[name].to(device=device, dtype=dtype) for name, _ in model.named_parameters()}
    if check_finite:
        _check_finite(tensors, source)
    if config.tie_word_embeddings:
        tensors["output.weight"] = tensors["tok_embeddings.weight"]
    model.load_state_dict(tensors, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.output.weight = model.tok_embeddings.weight  # assignment gave the head its own Parameter
    model.place_buffers(device)
    return model


def _check_finite(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a one-line HerdError naming the first tensor that holds a NaN or an infinity.

    A tensor's sum is NaN or infinite whenever one of its elements is (IEEE arithmetic propagates both); a finite
    tensor whose sum overflows is cleared by the exact check. The sum reads the weights once and writes nothing, a
    small part of a load's time, where `isfinite(t).all()` on every tensor would cost more than the load.
    """
    for name, tensor in tensors.items():
        if torch.isfinite(tensor.sum()) or torch.isfinite(tensor).all():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        raise HerdError(
            f"{source}: tensor {name} holds {bad:,} NaN or infinite value(s) of {tensor.numel():,}; the checkpoint "
            "is damaged or its training diverged (herd.load(..., check_finite=False) loads it anyway, to inspect it)"
        )


def unique_weights(model: Transformer) -> dict[str, torch.Tensor]:
    """herd-named weights with the tied head stored once (as safetensors requires), detached."""
    return {name: param.detach() for name, param in model.named_parameters()}
