"""herd-named weights <-> a `Transformer`: check tensors against a config, build a model that takes them.

The model is built on the meta device and takes the tensors by assignment, so memory-mapped checkpoint
tensors become the parameters without a second copy.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from herd.errors import HerdError
from herd.model import ModelConfig, Transformer, build_model
from herd.model.rope import rope_frequencies


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


def model_from_state(
    config: ModelConfig,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Transformer:
    """A model whose parameters are `state`'s tensors, moved/cast only where device or dtype differ.

    dtype None keeps each tensor's own dtype. With tied embeddings a stored `output.weight` is ignored.
    """
    check_state(config, state, source)
    model = build_model(config, device="meta")
    tensors = {name: state[name].to(device=device, dtype=dtype) for name, _ in model.named_parameters()}
    if config.tie_word_embeddings:
        tensors["output.weight"] = tensors["tok_embeddings.weight"]
    model.load_state_dict(tensors, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.output.weight = model.tok_embeddings.weight  # assignment gave the head its own Parameter
    model.rope_freqs = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling).to(device)
    return model


def unique_weights(model: Transformer) -> dict[str, torch.Tensor]:
    """herd-named weights with the tied head stored once (as safetensors requires), detached."""
    return {name: param.detach() for name, param in model.named_parameters()}
