"""The head + loss on one GPU: herd's chunked linear cross-entropy (compiled chunks, eager chunks) vs whole logits.

Forward and backward of `sum cross-entropy(hidden @ weight.T, targets)` at the 8B model's head (dim 4,096, vocab
128,256) over one 8,192-token row, bf16 hidden states and weight (as FSDP's mixed precision hands them over):
- herd: `herd.train.fused_loss.linear_cross_entropy`, chunks compiled (the CUDA default);
- herd eager: the same with eager chunks (the code path before compiled chunks);
- whole logits: `F.linear` then `F.cross_entropy` on fp32 logits (the plain HF-style head and loss);
- whole logits, compiled: the same through torch.compile (torchtitan compiles its loss this way).
Sides take turns for `--rounds` rounds; reported: median ms per forward + backward, peak memory above the inputs,
and each side's loss and gradients against an fp32 reference. `--dry-run`: small shapes on CPU, to check the code.
Usage: python benchmarks/loss_gpu.py [--tokens 8192 --dim 4096 --vocab 128256 --rounds 10] | --dry-run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from herd.train import fused_loss

GIB = 2**30


def whole_logits(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")


def herd_side(device_types: tuple[str, ...]) -> Callable[..., torch.Tensor]:
    """herd's loss with chunks compiled on `device_types` only."""

    def loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        fused_loss.COMPILED_DEVICES = device_types
        return fused_loss.linear_cross_entropy(hidden, weight, targets)

    return loss


def run(side: Callable[..., torch.Tensor], hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    """One forward + backward: the loss, the two gradients, its seconds and its peak bytes above the inputs."""
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    sync(hidden.device)
    base = memory(hidden.device, reset=True)
    start = time.perf_counter()
    loss = side(hidden, weight, targets)
    loss.backward()
    sync(hidden.device)
    return loss.detach(), hidden.grad, weight.grad, time.perf_counter() - start, memory(hidden.device) - base


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory(device: torch.device, reset: bool = False) -> int:
    if device.type != "cuda":
        return 0
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return torch.cuda.max_memory_allocated(device)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).norm() / want.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dry-run", action="store_true", help="small shapes on CPU (chunks compiled there too)")
    args = parser.parse_args()
    if args.dry_run:
        args.tokens, args.dim, args.vocab, args.rounds = 1000, 64, 5000, 3
        fused_loss.CHUNK_ELEMENTS["cpu"] = 2**20  # several chunks, the last one short
    elif not torch.cuda.is_available():
        parser.error("no CUDA GPU visible; use --dry-run to check the code on CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    torch.manual_seed(0)
    hidden = torch.randn(args.tokens, args.dim, device=device, dtype=dtype)
    weight = (torch.randn(args.vocab, args.dim, device=device) * args.dim**-0.5).to(dtype)
    targets = torch.randint(0, args.vocab, (args.tokens,), device=device)
    targets[: args.tokens // 10] = -100  # some ignored rows, as in packed SFT data
    sides = {
        "herd (compiled chunks)": herd_side((device.type,)),
        "herd (eager chunks)": herd_side(()),
        "whole logits": whole_logits,
        "whole logits, compiled": torch.compile(whole_logits),
    }
    exact = torch.float64 if args.dry_run else torch.float32
    reference = run(whole_logits, hidden.to(exact), weight.to(exact), targets)
    times: dict[str, list[float]] = {name: [] for name in sides}
    results = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up (compiles)
        for name, side in sides.items():
            loss, grad_hidden, grad_weight, seconds, peak = run(side, hidden, weight, targets)
            if round_:
                times[name].append(seconds)
            results[name] = (loss, grad_hidden, grad_weight, peak)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    print(f"device: {name}; torch {torch.__version__}; {args.tokens} tokens x dim {args.dim} -> vocab {args.vocab}, "
          f"{dtype}; chunk rows compiled/eager: {fused_loss.chunk_rows(args.vocab, device.type, True)}/"
          f"{fused_loss.chunk_rows(args.vocab, device.type, False)}; median of {args.rounds} rounds")
    print("| side | ms (fwd + bwd) | peak memory GiB | loss rel. err | grad hidden rel. err | grad weight rel. err |")
    print("|---|---:|---:|---:|---:|---:|")
    for side, (loss, grad_hidden, grad_weight, peak) in results.items():
        errors = [relative_error(got, want.float()) for got, want in zip(
            (loss, grad_hidden, grad_weight), reference[:3], strict=True)]
        print(f"| {side} | {statistics.median(times[side]) * 1e3:.1f} | {peak / GIB:.2f} | "
              + " | ".join(f"{e:.1e}" for e in errors) + " |")


if __name__ == "__main__":
    main()
