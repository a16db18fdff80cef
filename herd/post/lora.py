"""LoRA adapters: low-rank A/B updates beside frozen linear layers, for memory-light fine-tuning.

Owns wrapping a model's linears, switching the adapters off (the base model, for a reference, without a second copy),
merging the updates into the base weights, and saving/loading the adapters alone.
Written here rather than taken from PEFT: herd's model is not a transformers model, and the wrapper is ~20 lines.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from herd.checkpoint.files import read_json
from herd.checkpoint.safetensors_io import read_tensors, write_tensors
from herd.errors import HerdError
from herd.run_dir import write_json

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class LoRAConfig:
    """Which linears get adapters and their size; rank 0 trains every weight (no LoRA)."""

    rank: int = 0
    """Rank r of the update B @ A; 0 turns LoRA off."""
    alpha: float = 16.0
    """The update is scaled by alpha / rank."""
    targets: list[str] = field(default_factory=lambda: ["wq", "wk", "wv", "wo"])
    """Names of the linear layers to adapt (attention wq wk wv wo, feed-forward w1 w2 w3, output)."""

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise HerdError(f"lora.rank must be 0 (off) or more, got {self.rank}")
        if self.rank and not self.targets:
            raise HerdError("lora.targets is empty; name the linears to adapt, e.g. lora.targets='[\"wq\", \"wv\"]'")


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * x A^T B^T, with `base` frozen (any dtype) and A, B in fp32; B starts at zero so
    training starts at the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.enabled = True
        base.weight.requires_grad_(False)
        device = base.weight.device  # the adapters train in fp32 whatever the frozen base's dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=torch.float32))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own initialization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.base(x)
        a, b = self.lora_a, self.lora_b
        if not torch.is_autocast_enabled(x.device.type):  # autocast casts them itself, without copying x
            a, b = a.to(x.dtype), b.to(x.dtype)
        return self.base(x) + (x @ a.T @ b.T) * self.scale

    def merged(self) -> nn.Linear:
        """The base linear with the update added into its weight."""
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a).to(self.base.weight.dtype) * self.scale
        return self.base


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Freeze every parameter of `model` and wrap each linear named in `config.targets` in a LoRALinear (in place)."""
    for param in model.parameters():
        param.requires_grad_(False)
    wrapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in config.targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, config.rank, config.alpha))
                wrapped += 1
    if not wrapped:
        raise HerdError(f"lora.targets {config.targets} name no linear layer of the model; use e.g. wq, wv, w1")
    return model


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block `model` computes as its base model: every LoRALinear skips its update."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.enabled = True


class WithoutAdapters:
    """The base model under a LoRA-wrapped `model`, called like a model: the same weights run with the adapters
    off, so a frozen reference costs no second copy. Not an nn.Module, so freezing it cannot touch the policy."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        with adapters_disabled(self.model):
            return self.model(*args, **kwargs)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each LoRALinear by its base linear with the update merged in (in place); all parameters train again."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of `model` by their state-dict names."""
    return {name: value for name, value in model.state_dict().items() if name.endswith((".lora_a", ".lora_b"))}


def save_adapters(model: nn.Module, config: LoRAConfig, directory: str | Path) -> Path:
    """Write the adapters alone (safetensors plus their config) to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory, {k: v.detach().contiguous() for k, v in adapter_state(model).items()})
    write_json(directory / ADAPTER_CONFIG, {"rank": config.rank, "alpha": config.alpha, "targets": config.targets})
    return directory


def load_adapters(model: nn.Module, directory: str | Path) -> nn.Module:
    """Wrap `model` as the saved adapters were and load their weights (the base weights stay as they are)."""
    directory = Path(directory)
    if not (directory / ADAPTER_CONFIG).is_file():
        raise HerdError(f"{directory} holds no LoRA adapters ({ADAPTER_CONFIG} missing)")
    config = LoRAConfig(**read_json(directory / ADAPTER_CONFIG))
    apply_lora(model, config)
    saved = read_tensors(directory)
    expected = adapter_state(model)
    if set(saved) != set(expected):
        raise HerdError(f"the adapters in {directory} do not fit this model: {sorted(set(saved) ^ set(expected))[:3]}")
    model.load_state_dict(saved, strict=False)
    return model
