"""Training tokens/s on CPU: herd's step, eager and compiled, vs a plain HF `LlamaForCausalLM` + fused AdamW loop, eager
and compiled.

Same shapes and batch for both (weights differ). Each side lives in its own process; after warm-up the processes take
turns, `--steps` steps each, for `--rounds` rounds, so the machine's drifts between fast and slow phases hit every
side alike. Reported: each side's median rate, and the median over rounds of each round's ratio (the steadier figure
on a noisy machine).
fp32 by default; `--dtype bfloat16` runs every side under bf16 autocast (fp32 weights), for CPUs with native bf16.
The HF side runs as HF's CPU-training and torch.compile docs describe (`bf16=True` is autocast, `torch_compile=True`
is inductor), with SDPA attention, no gradient checkpointing and the fused AdamW; each HF side prints those settings,
and where herd comes out more than 2x ahead its process profiles `--steps` more steps and prints its top ops.
Usage: python benchmarks/train_cpu.py [--dim 256 --layers 4 ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from cpu_info import cpu_line
from peer_profile import SUSPICIOUS, torch_top_ops

from herd.model.cpu_tuning import PLAIN_ENV


def herd_step(args: argparse.Namespace, batch: tuple[torch.Tensor, ...], compile: bool) -> Callable[[], None]:
    from herd.model import ModelConfig, build_model
    from herd.train.config import FaultConfig, OptimConfig
    from herd.train.distributed import Distributed
    from herd.train.losses import next_token_loss
    from herd.train.metrics import MetricsLog
    from herd.train.optimizer import build_optimizer
    from herd.train.parallelize import parallelize
    from herd.train.trainer import LoopConfig, Trainer

    config = ModelConfig(
        dim=args.dim, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.kv_heads, vocab_size=args.vocab,
        multiple_of=32, ffn_dim_multiplier=None, max_seq_len=args.seq_len,
    )
    device = torch.device("cpu")
    model = build_model(config, device="meta")
    parallelize(model, Distributed(0, 1, device), activation_checkpointing=False, compile=compile)
    model.to_empty(device="cpu")
    model.init_weights(0)
    loop = LoopConfig(steps=10**9, lr_at=lambda step: 1e-4, accum_at=lambda step: 1, faults=FaultConfig(),
                      progress=False)
    trainer = Trainer(
        model, build_optimizer(model, OptimConfig(), device), next_token_loss, _repeat(batch), loop,
        MetricsLog(tempfile.mkdtemp()), device=device, autocast_dtype=AUTOCAST[args.dtype],
    )
    return trainer.train_step


def hf_step(args: argparse.Namespace, batch: tuple[torch.Tensor, ...],
            compile: bool) -> tuple[Callable[[], None], str]:
    """The HF loop's step, and its settings in words."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from herd.model import ModelConfig

    ffn = ModelConfig(dim=args.dim, n_heads=args.heads, n_kv_heads=args.kv_heads, multiple_of=32,
                      ffn_dim_multiplier=None).ffn_hidden_dim
    config = LlamaConfig(
        hidden_size=args.dim, intermediate_size=ffn, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, vocab_size=args.vocab, max_position_embeddings=args.seq_len,
        rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).train()
    if compile:  # what HF's Trainer does with torch_compile=True
        model = torch.compile(model)
    # fused: the kernel herd's optimizer uses, and HF Trainer's default optimizer (adamw_torch_fused) on torch >= 2.8
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    tokens, labels = batch[0], torch.cat([batch[0][:, :1], batch[1]], dim=1)[:, :-1]  # HF shifts labels itself

    def step() -> None:
        with torch.autocast("cpu", dtype=AUTOCAST[args.dtype], enabled=AUTOCAST[args.dtype] is not None):
            loss = model(input_ids=tokens, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()

    checkpointing = (model.is_activation_checkpointing if hasattr(model, "is_activation_checkpointing")
                     else model.is_gradient_checkpointing)  # renamed in transformers 5
    settings = (f"attention={model.config._attn_implementation}, activation_checkpointing={checkpointing}, "
                f"AdamW fused={optimizer.defaults['fused']}, autocast={AUTOCAST[args.dtype]}, "
                f"torch.compile={'inductor' if compile else 'off'}")
    return step, settings


def _repeat(batch: tuple[torch.Tensor, ...]):
    class Repeat:
        def __iter__(self):
            return self

        def __next__(self) -> tuple[torch.Tensor, ...]:
            return batch

        def state_dict(self) -> dict:
            return {}

    return Repeat()


def tokens_per_s(step: Callable[[], None], tokens: int, steps: int) -> tuple[float, float]:
    """Tokens per wall-clock second and per CPU second of this process (the latter shrugs off other load)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return tokens * steps / (time.perf_counter() - wall), tokens * steps / (time.process_time() - cpu)


AUTOCAST = {"float32": None, "bfloat16": torch.bfloat16}
SIDES = ("herd", "herd+compile", "herd-plain", "hf", "hf+compile")
"""herd+compile: herd with `compile=true` (blocks compiled by torch.compile). herd-plain: herd with HERD_CPU_PLAIN=1
(none of herd.model.cpu_tuning's tricks), which `--sides herd,herd-plain` measures against herd alone. hf+compile:
the HF model under torch.compile, as HF Trainer's `torch_compile=True` runs it (the peer of herd+compile)."""
BASELINES = ("herd-plain", "hf", "hf+compile")


def serve_side(args: argparse.Namespace) -> None:
    """One side in this process: build and warm up, then for each line on stdin time `--steps` steps and print its
    two rates as JSON; until stdin closes."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokens = torch.randint(0, args.vocab, (args.batch_size, args.seq_len + 1))
    # one document per row: the same causal attention on both sides
    batch = (tokens[:, :-1], tokens[:, 1:].clone(), torch.zeros(args.batch_size, args.seq_len, dtype=torch.long))
    settings = ""
    if args.side.startswith("herd"):
        step = herd_step(args, batch, compile=args.side == "herd+compile")
    else:
        step, settings = hf_step(args, batch, compile=args.side == "hf+compile")
    for _ in range(2):  # warm-up (allocator, compile)
        step()
    print(json.dumps({"threads": torch.get_num_threads(), "settings": settings}), flush=True)  # ready
    for line in sys.stdin:
        if line.strip() == "profile":
            print(json.dumps({"profile": torch_top_ops(lambda: [step() for _ in range(args.steps)])}), flush=True)
            continue
        wall, cpu = tokens_per_s(step, args.batch_size * args.seq_len, args.steps)
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


def _ask(child: subprocess.Popen, request: str | None = None) -> dict:
    if request is not None:
        child.stdin.write(request + "\n")
        child.stdin.flush()
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"a benchmark process exited early: {child.args}")
    return json.loads(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="steps per side per round")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--dtype", choices=list(AUTOCAST), default="float32", help="bfloat16: autocast on every side")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)  # one side, in a child process
    args = parser.parse_args()
    if args.side:
        return serve_side(args)
    sides = args.sides.split(",")
    children = {side: subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--side", side], text=True,
                                       env={**os.environ, PLAIN_ENV: "1" if side == "herd-plain" else "0"},
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE) for side in sides}
    ready = {side: _ask(child) for side, child in children.items()}  # each warms up in turn
    threads = next(iter(ready.values()))["threads"]
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, child in children.items():
            results[side].append(_ask(child, "run"))
    print(cpu_line())
    for side in sides:
        if ready[side]["settings"]:
            print(f"{side} settings: {ready[side]['settings']}")
    print(f"torch {torch.__version__}, {threads} threads; model dim {args.dim} x {args.layers} layers, vocab "
          f"{args.vocab}, batch {args.batch_size} x {args.seq_len}, {args.dtype}, {args.rounds} rounds of {args.steps} "
          f"steps per side, one process per side")
    print(f"{'':>12}  {'tokens/s (wall)':>16}  {'tokens/CPU-s':>13}  rounds (wall)")
    for side, runs in results.items():
        medians = {key: statistics.median(r[key] for r in runs) for key in ("wall", "cpu")}
        listed = ", ".join(f"{r['wall']:.0f}" for r in runs)
        print(f"{side:>12}  {medians['wall']:16.0f}  {medians['cpu']:13.0f}  {listed}")
    for ours, baseline in itertools.product(sides, BASELINES):
        if ours in BASELINES or baseline not in sides:
            continue
        wall, cpu = (statistics.median(h[key] / b[key] for h, b in zip(results[ours], results[baseline], strict=True))
                     for key in ("wall", "cpu"))
        print(f"ratio {ours} / {baseline} (median over rounds): {wall:.2f}x wall-clock, {cpu:.2f}x per CPU-second")
        if baseline != "herd-plain" and cpu > SUSPICIOUS:
            print(f"{ours} > {SUSPICIOUS:.0f}x {baseline}: {args.steps} more {baseline} steps under torch.profiler, "
                  f"top ops by self CPU time:\n{_ask(children[baseline], 'profile')['profile']}")
    for child in children.values():
        child.stdin.close()
        child.wait()


if __name__ == "__main__":
    main()
