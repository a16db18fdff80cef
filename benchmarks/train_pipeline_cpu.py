"""Pipeline schedules on CPU: `herd pretrain` tokens/s with pp=2 under each schedule, beside one process.

    python benchmarks/train_pipeline_cpu.py [--layers 8] [--micro-batches 4] [--steps 12] [--runs 3]

Two ranks (gloo, one thread each) train the same model on the same data as one process with two threads. With one
stage per rank (GPipe, 1F1B) a rank idles for (pp - 1) / (m + pp - 1) of a step of m micro-batches; the
interleaved schedules hold two stages per rank (parallel.pp_stages_per_rank=2), which divides that bubble by two
at the price of twice the sends. Data: Python's standard-library source under a byte-level tokenizer. Each
figure is the median over runs of the median tokens/s of the steps after the first two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpu_info import cpu_line

from herd.corpus.stdlib import write_stdlib_corpus
from herd.tokenizer import write_bpe_file
from herd.train.metrics import read_records
from herd.train.token_shards import tokenize_corpus

LAYOUTS = {
    "one process": ("parallel.pp=1",),
    "GPipe": ("parallel.pp=2", "parallel.pp_schedule=GPipe"),
    "1F1B": ("parallel.pp=2", "parallel.pp_schedule=1F1B"),
    "Interleaved1F1B": ("parallel.pp=2", "parallel.pp_schedule=Interleaved1F1B", "parallel.pp_stages_per_rank=2"),
    "LoopedBFS": ("parallel.pp=2", "parallel.pp_schedule=LoopedBFS", "parallel.pp_stages_per_rank=2"),
}


def shards(directory: Path) -> Path:
    """Token shards of the stdlib training split under a 256-byte tokenizer."""
    write_stdlib_corpus(directory / "corpus")
    tok = write_bpe_file({bytes([i]): i for i in range(256)}, directory / "bytes.model")
    tokenize_corpus([directory / "corpus" / "train.jsonl"], tok, directory / "shards", 1, show_progress=False)
    return directory / "shards"


def run(layout: str, config: Path, out: Path) -> float:
    """Median tokens/s of one run's steps after the first two."""
    ranks = 1 if layout == "one process" else 2
    threads = "2" if ranks == 1 else "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "herd.cli", "pretrain", "--config", str(config), f"out_dir={out}", *LAYOUTS[layout]]
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        raise SystemExit(f"{layout} failed:\n{result.stderr[-3000:]}")
    rates = [r["tokens_per_s"] for r in read_records(out / "metrics.jsonl") if "tokens_per_s" in r]
    return statistics.median(rates[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--micro-batches", type=int, default=4, help="grad_accum: micro-batches per step")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = tmp / "config.json"
        config.write_text(json.dumps({
            "model": {"preset": "tiny", "fields": {"dim": args.dim, "n_layers": args.layers, "n_heads": 8,
                                                   "n_kv_heads": 4, "multiple_of": 32, "max_seq_len": 256}},
            "data": {"sources": {"stdlib": str(shards(tmp))}},
            "optim": {"warmup_steps": 2}, "steps": args.steps, "batch_size": 4, "seq_len": 256, "grad_accum": args.micro_batches,
            "eval_interval": 0, "checkpoint_interval": 0, "device": "cpu", "progress": False, "export_format": None,
        }))
        rates: dict[str, list[float]] = {name: [] for name in LAYOUTS}
        for i in range(args.runs):
            for name in LAYOUTS:
                rates[name].append(run(name, config, tmp / f"{name}-{i}".replace(" ", "_")))
    print(cpu_line())
    print(f"dim {args.dim} x {args.layers} layers, {args.micro_batches} micro-batches of 4 x 256 tokens per step, "
          f"2 CPU cores; median of {args.runs} runs")
    base = statistics.median(rates["one process"])
    print(f"{'layout':16} {'tokens/s':>9} {'vs one process':>15}")
    for name, values in rates.items():
        print(f"{name:16} {statistics.median(values):9.0f} {statistics.median(values) / base:14.2f}x")


if __name__ == "__main__":
    main()
