"""Training metrics: model FLOPs and MFU, memory, validation loss and bits-per-byte, and where they go.

Records go to a JSONL file (always), TensorBoard (when installed) and a PNG of the curves (matplotlib, when installed).
"""

from __future__ import annotations

import json
import math
import resource
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from herd.model import ModelConfig
from herd.run_dir import write_text

# Dense bf16 peak TFLOPS by device-name fragment, most specific first (vendor datasheets, no sparsity).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.5),
    ("H100 PCIe", 756.0),
    ("H100", 989.5),
    ("A100", 312.0),
)


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token: 6 x matmul parameters + 12 x layers x dim x seq_len.

    The second term is attention's QK^T and AV over a full (unmasked) row, as PaLM and torchtitan count it;
    the embedding lookup is no matmul, the output head is.
    """
    embedding = 0 if config.tie_word_embeddings else config.vocab_size * config.dim
    norms = (2 * config.n_layers + 1) * config.dim
    matmul_params = config.num_params() - embedding - norms
    return 6.0 * matmul_params + 12.0 * config.n_layers * config.dim * seq_len


def peak_tflops(device: torch.device, configured: float | None) -> float | None:
    """The device's peak TFLOPS for MFU: the configured value, else the table for known GPUs, else None."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in PEAK_BF16_TFLOPS if fragment in name), None)


def memory_gib(device: torch.device) -> float:
    """Peak memory so far: allocated GPU memory on CUDA, the process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)  # bytes on macOS, KiB on Linux


def token_byte_lengths(n_words: int, n_special: int, token_bytes) -> torch.Tensor:
    """UTF-8 bytes of each token id [n_words]; special tokens (the last n_special ids) count 0 bytes."""
    lengths = [len(token_bytes(i)) for i in range(n_words - n_special)]
    return torch.tensor(lengths + [0] * n_special, dtype=torch.int64)


def bits_per_byte(nats: torch.Tensor, targets: torch.Tensor, byte_lengths: torch.Tensor) -> tuple[float, int]:
    """(sum of nats, bytes) to accumulate bits-per-byte = nats / (ln 2 x bytes) over targets with bytes.

    `nats` [B, T] are per-token losses; ignored targets (-100) and special tokens (0 bytes) are left out,
    so the figure compares across tokenizers.
    """
    valid = targets >= 0
    lengths = torch.where(valid, byte_lengths.to(targets.device)[targets.clamp(min=0)], 0)
    counted = lengths > 0
    return float(nats[counted].sum()), int(lengths.sum())


class MetricsLog:
    """Step records to `run_dir/metrics.jsonl` (and TensorBoard when installed); `open` drops records past a resumed step.

    Disabled (`enabled=False`, on every rank but 0 of a job) it writes nothing.
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.tensorboard = tensorboard
        self.enabled = enabled
        self._file = None
        self._tb = None

    def open(self, resume_step: int = 0) -> None:
        """Start writing after `resume_step`: records of later steps (from before a crash) are dropped."""
        if not self.enabled:
            return
        kept = [r for r in read_records(self.path) if r.get("step", 0) <= resume_step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        self._file = self._tb = None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics JSONL file (none if it does not exist); a torn last line is dropped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the process died mid-write
    return records


def plot_curves(records: Sequence[dict[str, Any]], out: Path) -> Path | None:
    """A PNG of training and validation loss and the LR against the step; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    fig, (loss_ax, lr_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 1))
    loss_ax.plot(*_series(train, "loss"), label="train loss", linewidth=1)
    if val:
        loss_ax.plot(*_series(val, "val_loss"), "o-", label="validation loss")
    loss_ax.set_ylabel("loss (nats/token)")
    loss_ax.legend()
    loss_ax.grid(alpha=0.3)
    lr_ax.plot(*_series(train, "lr"), color="tab:green")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("step")
    lr_ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _series(records: Iterable[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if r.get(key) is not None and math.isfinite(r[key])]
    return [p[0] for p in pairs], [p[1] for p in pairs]
