"""How much memory a pretraining run needs per rank, and a check that fails before the first step when it will not fit."""

from __future__ import annotations

from pathlib import Path

import torch

from herd.errors import HerdError
from herd.model import ModelConfig
from herd.train.config import PretrainConfig
from herd.train.fused_loss import chunk_bytes

GIB = 2**30


def estimate_memory(
    model: ModelConfig, *, batch_size: int, seq_len: int, compute_bytes: int, activation_checkpointing: bool,
    materialized_attention: bool, device_type: str,
) -> dict[str, float]:
    """Bytes per rank: fp32 parameters, fp32 gradients, AdamW's two fp32 moments and one micro-batch's activations.

    Activations per block and token: ~9 x dim + 3 x kv_dim + 4 x ffn_hidden values saved for the backward
    (norms, q/k/v before and after RoPE, attention output, SwiGLU's three hidden tensors), plus the
    attention-probability matrix where attention materializes it (on CPU: herd.model.blocked_attention, or a
    masked SDPA), plus the chunked head and loss (herd.train.fused_loss): one chunk's logits and their gradient on
    `device_type` (whole-vocabulary rows, an upper bound under tensor parallelism), the hidden states'
    gradient and the head's fp32 gradient sum. Checkpointing keeps one block's activations and every block's input.
    """
    params = model.num_params()
    tokens = batch_size * seq_len
    kv_dim = model.kv_heads * model.head_dim
    per_block = tokens * (9 * model.dim + 3 * kv_dim + 4 * model.ffn_hidden_dim) * compute_bytes
    if materialized_attention:
        per_block += 2 * batch_size * model.n_heads * seq_len * seq_len * 4
    blocks = per_block + (model.n_layers - 1) * tokens * model.dim * compute_bytes if activation_checkpointing \
        else model.n_layers * per_block
    chunk = chunk_bytes(tokens, model.vocab_size, device_type, compute_bytes)
    head = chunk + tokens * model.dim * compute_bytes + model.vocab_size * model.dim * 4
    return {"parameters": params * 4, "gradients": params * 4, "optimizer": params * 8, "activations": blocks + head}


def check_memory(
    model: ModelConfig, config: PretrainConfig, device: torch.device, autocast: torch.dtype | None, *, shards: int = 1
) -> None:
    """Print the per-rank memory estimate and fail at once when it exceeds what the device has.

    Parameters, gradients and optimizer state are split over the `shards` ranks; activations are counted whole.
    """
    estimate = estimate_memory(
        model, batch_size=config.batch_size, seq_len=config.seq_len, compute_bytes=2 if autocast else 4,
        activation_checkpointing=config.activation_checkpointing, materialized_attention=device.type != "cuda",
        device_type=device.type,
    )
    for part in ("parameters", "gradients", "optimizer"):
        estimate[part] /= shards
    total = sum(estimate.values())
    parts = ", ".join(f"{name} {value / GIB:.2f}" for name, value in estimate.items())
    line = f"memory estimate per rank: {total / GIB:.2f} GiB ({parts} GiB)"
    available = available_bytes(device)
    print(line + (f"; {device} has {available / GIB:.1f} GiB available" if available else ""), flush=True)
    if available and total > available:
        raise HerdError(
            f"the run needs ~{total / GIB:.1f} GiB ({parts} GiB) but {device} has {available / GIB:.1f} GiB; "
            "lower batch_size or seq_len, set activation_checkpointing=true, or pick a smaller model"
        )


def available_bytes(device: torch.device) -> int | None:
    """Free bytes on a GPU, or the host's MemAvailable for any other device (None where it cannot be read)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None
