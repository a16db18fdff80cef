"""Pretraining throughput on one GPU: an 8B-architecture Llama 3 with fewer layers, seq 8192, bf16, FSDP2, compile.

herd's own training step (Trainer, FSDP2 mixed precision, compiled blocks) on a fixed batch; reports the median
tokens/s and MFU (model FLOPs incl. attention / the device's bf16 peak) over `--runs` timed runs of `--steps` steps.
`--dry-run` runs the same code path on CPU (gloo, a tiny model, fp32) to check it without a GPU.
`--documents N` packs N documents per row: document-masked attention (FlexAttention; `--dense-mask`: SDPA with a
dense mask, for the side-by-side).
`--eager-loss`: the chunked head + loss with eager chunks (compiled on CUDA by default).
Usage: python benchmarks/train_gpu.py [--layers 6 --seq-len 8192 --batch-size 0 --documents 1 --dense-mask] | --dry-run
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from herd.model import ModelConfig, build_model, flex_attention, preset
from herd.train import fused_loss
from herd.train.config import FaultConfig, OptimConfig
from herd.train.distributed import Distributed
from herd.train.losses import next_token_loss
from herd.train.memory_estimate import GIB, estimate_memory
from herd.train.metrics import MetricsLog, flops_per_token, peak_tflops
from herd.train.optimizer import build_optimizer
from herd.train.parallelize import apply_fsdp, parallelize
from herd.train.trainer import LoopConfig, Trainer
from herd.train.weight_init import init_sharded_weights

DRY_RUN_MODEL = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 512, "multiple_of": 32}


def estimated_bytes(config: ModelConfig, args: argparse.Namespace, batch_size: int, device: torch.device) -> float:
    """herd's memory estimate of the run (herd.train.memory_estimate.estimate_memory) at `batch_size` rows."""
    return sum(estimate_memory(config, batch_size=batch_size, seq_len=args.seq_len, compute_bytes=2,
                               activation_checkpointing=args.activation_checkpointing, materialized_attention=False,
                               device_type=device.type).values())


def fitting_batch(config: ModelConfig, args: argparse.Namespace, device: torch.device) -> int:
    """The most rows per step, up to 4, whose estimate fits in 90% of the GPU's free memory (1 on CPU). More rows
    spread the step's fixed costs over more tokens: AdamW and FSDP's casts pass over every parameter, ~35 ms a step
    for the 2.4B of 6 layers at an H100's bandwidth (by arithmetic, not measured)."""
    if device.type != "cuda":
        return 1
    free = torch.cuda.mem_get_info(device)[0]
    return next((rows for rows in (4, 2) if estimated_bytes(config, args, rows, device) <= 0.9 * free), 1)


def build(args: argparse.Namespace) -> tuple[ModelConfig, Trainer, torch.device]:
    """The model (meta -> compile -> FSDP2 on a one-rank mesh -> materialized), its optimizer and Trainer; sets
    `args.batch_size` where it is 0."""
    device = torch.device("cpu" if args.dry_run else "cuda")
    fields = DRY_RUN_MODEL if args.dry_run else {"n_layers": args.layers}
    config = dataclasses.replace(preset("llama3-8b"), **fields, max_seq_len=args.seq_len)
    args.batch_size = args.batch_size or fitting_batch(config, args, device)
    estimate = estimated_bytes(config, args, args.batch_size, device)
    print(f"{config.num_params() / 1e9:.2f}B parameters, batch {args.batch_size}, ~{estimate / GIB:.1f} GiB estimated",
          flush=True)
    store = f"file://{tempfile.mkdtemp()}/store"
    dist.init_process_group("gloo" if args.dry_run else "nccl", init_method=store, rank=0, world_size=1)
    mesh = init_device_mesh(device.type, (1,), mesh_dim_names=("dp",))
    model = build_model(config, device="meta")
    parallelize(model, Distributed(0, 1, device), activation_checkpointing=args.activation_checkpointing,
                compile=not args.no_compile)
    apply_fsdp(model, mesh, torch.float32 if args.dry_run else torch.bfloat16)  # CPU kernels lack some bf16 ops
    model.to_empty(device=device)
    init_sharded_weights(model, config, seed=0)
    loop = LoopConfig(steps=10**9, lr_at=lambda step: 1e-5, accum_at=lambda step: 1, faults=FaultConfig(), progress=False)
    tokens = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len + 1), device=device)
    # --documents N: N equal documents per row, so attention runs under a document mask (FlexAttention on CUDA), not
    # the causal kernel
    doc_ids = (torch.arange(args.seq_len, device=device) * args.documents // args.seq_len).expand(args.batch_size, -1)
    batch = (tokens[:, :-1], tokens[:, 1:].contiguous(), doc_ids.contiguous())
    trainer = Trainer(model, build_optimizer(model, OptimConfig(), device), next_token_loss, Repeat(batch), loop,
                      MetricsLog(tempfile.mkdtemp(), enabled=False), device=device)
    return config, trainer, device


class Repeat:
    """The same batch forever (a data loader without I/O)."""

    def __init__(self, batch: tuple[torch.Tensor, ...]) -> None:
        self.batch = batch

    def __iter__(self) -> Repeat:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        return self.batch

    def state_dict(self) -> dict:
        return {}


def timed_tokens_per_s(trainer: Trainer, device: torch.device, tokens: int, steps: int) -> tuple[float, float]:
    """Tokens/s over `steps` steps, and the last step's loss."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = trainer.train_step()["loss"]  # ends in a host sync (the loss and grad norm are read)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens * steps / (time.perf_counter() - start), loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6, help="layers of the 8B architecture (32 do not fit one GPU)")
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=0,
                        help="rows per step (0: the most, up to 4, that herd's memory estimate fits on the GPU)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, allocator)")
    parser.add_argument("--documents", type=int, default=1, help="documents packed per row (document-masked attention)")
    parser.add_argument("--dense-mask", action="store_true",
                        help="document masks through SDPA with a dense [B, 1, T, T] mask instead of FlexAttention")
    parser.add_argument("--eager-loss", action="store_true",
                        help="the chunked loss with eager chunks instead of compiled ones (herd.train.fused_loss)")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak (default: herd's table)")
    parser.add_argument("--dry-run", action="store_true", help="the same code path on CPU with a tiny model")
    args = parser.parse_args()
    if args.dry_run:
        args.seq_len, args.steps, args.runs, args.warmup = 128, 2, 2, 1
    elif not torch.cuda.is_available():
        parser.error("no CUDA GPU visible; use --dry-run to check the code path on CPU")
    if args.dense_mask:
        flex_attention.FLEX_DEVICES = ()
    if args.eager_loss:
        fused_loss.COMPILED_DEVICES = ()
    config, trainer, device = build(args)
    tokens = args.batch_size * args.seq_len
    first_loss = trainer.train_step()["loss"]
    for _ in range(args.warmup - 1):
        trainer.train_step()
    rates, losses = zip(*(timed_tokens_per_s(trainer, device, tokens, args.steps) for _ in range(args.runs)))
    rate = statistics.median(rates)
    peak = peak_tflops(device, args.peak_tflops)
    tflops = flops_per_token(config, args.seq_len) * rate / 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    memory = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else float("nan")
    print(f"device: {name}; model: llama3-8b architecture, {config.n_layers} layers, {config.num_params() / 1e9:.2f}B "
          f"params; batch {args.batch_size} x seq {args.seq_len}, {'fp32' if args.dry_run else 'bf16'} FSDP2, "
          f"{args.documents} document(s) per row{' (dense SDPA mask)' if args.dense_mask else ''}, "
          f"compile={not args.no_compile}{' (loss chunks eager)' if args.eager_loss else ''}, "
          f"activation checkpointing={args.activation_checkpointing}")
    # a check on the numbers the step computes: a fresh model (logits of unit variance) starts ~0.5 above ln(vocab)
    print(f"loss: step 1 {first_loss:.3f} (ln vocab {math.log(config.vocab_size):.3f}), step "
          f"{args.warmup + args.runs * args.steps} {losses[-1]:.3f}")
    print("| tokens/s (median) | runs | TFLOPS | peak TFLOPS | MFU | peak memory GiB |")
    print("|---|---|---|---|---|---|")
    mfu = f"{tflops / peak:.1%}" if peak else "n/a"
    print(f"| {rate:,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} | {tflops:.1f} | {peak or 'n/a'} | {mfu} | "
          f"{memory:.1f} |")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
