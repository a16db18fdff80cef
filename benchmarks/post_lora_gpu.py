"""LoRA SFT of the Llama 3 8B architecture on one GPU (random weights): training tokens/s and peak memory.

Runs herd's `sft` stage on the `llama3-8b` preset with LoRA adapters (fp32) over its frozen base, held in bf16
under bf16 autocast, on synthetic chat dialogs (word problems with worked answers, `herd.corpus.math`) packed into
rows. Tokens/s is the median over steps 2..N of each step's tokens / its time; peak memory is
torch.cuda.max_memory_allocated over the whole stage (the model's weights included).
`--dry-run` runs the same code path on the CPU with the `tiny` preset and a few short steps.
Usage: python benchmarks/post_lora_gpu.py [--rank 16 --batch-size 2 --seq-len 2048 --steps 12] | --dry-run
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from herd.corpus.math import make_problem
from herd.post.lora import LoRAConfig
from herd.post.sft import SFTConfig, sft
from herd.train.metrics import read_records

ALL_LINEARS = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


def write_dialogs(path: Path, n: int) -> Path:
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(n):
            problem = make_problem(rng)
            f.write(json.dumps({"messages": [{"role": "user", "content": problem.question},
                                             {"role": "assistant", "content": problem.solution}]}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama3-8b", help="a preset or model directory")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--targets", default=",".join(ALL_LINEARS), help="comma-separated linears to adapt")
    parser.add_argument("--batch-size", type=int, default=2, help="2 x 2048 fits an H100 by estimate (~50 GiB)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--dialogs", type=int, default=4000)
    parser.add_argument("--dry-run", action="store_true", help="the tiny preset on the CPU, 3 steps of 2 x 128")
    args = parser.parse_args()
    if args.dry_run:
        args.model, args.batch_size, args.seq_len, args.steps, args.dialogs = "tiny", 2, 128, 3, 64
        device = "cpu"
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --dry-run to check the code path on the CPU")
    else:
        device = "cuda"
    work = Path(tempfile.mkdtemp(prefix="post_lora_gpu-"))
    config = SFTConfig(
        out_dir=str(work / "run"), model=args.model, data=str(write_dialogs(work / "dialogs.jsonl", args.dialogs)),
        steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, device=device, dtype="bfloat16",
        checkpoint_interval=0, resume=False, progress=False,
        lora=LoRAConfig(rank=args.rank, alpha=args.alpha, targets=args.targets.split(",")),
    )
    config.optim.warmup_steps = 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = sft(config)
    wall = time.perf_counter() - started
    steps = [r for r in read_records(result.run_dir / "metrics.jsonl") if "loss" in r]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else steps[-1]["memory_gib"]
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)"
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in steps[1:])
    print(f"{name}, torch {torch.__version__}; {args.model} LoRA rank {args.rank} on {args.targets}, bf16 base, "
          f"batch {args.batch_size} x {args.seq_len}, {len(steps)} steps")
    print(f"training tokens/s (median of steps 2..{len(steps)}): {tokens_per_s:,.0f}")
    print(f"peak memory: {peak:.2f} GiB ({'allocated on the GPU' if device == 'cuda' else 'process RSS'})")
    print(f"losses: {steps[0]['loss']:.4f} -> {steps[-1]['loss']:.4f}; stage wall time {wall:.1f} s "
          f"(load, train, save adapters and the merged model)")


if __name__ == "__main__":
    main()
