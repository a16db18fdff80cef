"""Tensor-parallel inference on CPU: tp=1 (1 process x 2 threads) vs tp=2 (2 torchrun ranks x 1 thread, gloo), the
same random model, the same 2 cores.

    python benchmarks/tp_inference.py [--rounds 3] [--layers 8] [--new-tokens 48]

Model: a ~160M-parameter Llama 3-shaped decoder (dim 1024, 16 heads over 8 KV heads, 32K vocabulary so no Llama 3
stop token comes out, fp32, random weights). Decode: batch-1 greedy `generate_tokens` of a 32-token prompt, tokens/s
of the decode steps = (new - 1) / (time(new) - time(1)). Serving: herd's engine (prepacked linears, as `herd serve`
runs on CPU) on 8 concurrent greedy requests of 32-token prompts x `--new-tokens` outputs, output tokens/s = their
tokens / wall time (engine in-process, no HTTP; under tp=2 rank 0 schedules and every rank runs each step). Each
round runs every side, alternating the order; the table shows medians over rounds. A third side, tp=1 on one
thread, shows what one core gives: on a busy machine a 2-thread process loses most to its threads waiting for each
other, so compare the sides only on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from cpu_info import cpu_line

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from herd.generation import generate_tokens  # noqa: E402
from herd.model import ModelConfig, build_model  # noqa: E402
from herd.model.tensor_parallel import init_tensor_parallel, parallelize  # noqa: E402
from herd.serve import Engine, EngineConfig, RequestParams  # noqa: E402
from herd.serve.packed import pack_linears  # noqa: E402
from herd.tokenizer import Tokenizer, default_tokenizer_path  # noqa: E402

PROMPT = 32
CONCURRENCY = 8
SIDES = {(1, 2): "tp=1, 1 process x 2 threads", (2, 1): "tp=2, 2 ranks x 1 thread (gloo)",
         (1, 1): "tp=1, 1 process x 1 thread (reference: one core)"}
"""(ranks, threads per rank): the comparison on 2 cores, and one core alone to read it against."""


def config(layers: int) -> ModelConfig:
    return ModelConfig(dim=1024, n_layers=layers, n_heads=16, n_kv_heads=8, vocab_size=32768, multiple_of=256,
                       ffn_dim_multiplier=None, max_seq_len=1024)


def worker(args: argparse.Namespace) -> None:
    """One side: decode tok/s and serving output tok/s, printed as JSON by rank 0."""
    torch.set_num_threads(args.threads)
    tp = init_tensor_parallel(args.tp, "cpu")
    model = build_model(config(args.layers))
    model.init_weights(seed=0)
    model.eval()
    if tp is not None:
        parallelize(model, tp)
    prompts = torch.randint(0, 32768, (CONCURRENCY + 1, PROMPT), generator=torch.Generator().manual_seed(1)).tolist()

    def run(tokens: int) -> float:
        start = time.perf_counter()
        generate_tokens(model, prompts[:1], max_new_tokens=tokens)
        return time.perf_counter() - start

    run(4)  # warm-up
    first, full = run(1), run(args.new_tokens)
    decode = (args.new_tokens - 1) / (full - first)

    pack_linears(model)
    engine = Engine(model, Tokenizer(default_tokenizer_path()), EngineConfig(max_running=CONCURRENCY))
    if tp is not None and tp.rank > 0:
        engine.follow()
        tp.close()
        return
    for i in range(CONCURRENCY):  # warm-up request
        engine.add_request(f"warm{i}", prompts[i], RequestParams(max_tokens=4))
    while engine.has_unfinished():
        engine.step()
    start, tokens = time.perf_counter(), 0
    for i in range(CONCURRENCY):
        engine.add_request(str(i), prompts[i], RequestParams(max_tokens=args.new_tokens))
    while engine.has_unfinished():
        tokens += sum(out.token_id is not None for out in engine.step())
    serving = tokens / (time.perf_counter() - start)
    engine.close()
    print(json.dumps({"decode": decode, "serving": serving, "tokens": tokens}), flush=True)
    if tp is not None:
        tp.close()


def side(tp: int, threads: int, args: argparse.Namespace) -> dict:
    """Run one side in fresh processes (`threads` each); rank 0's figures."""
    flags = ["--worker", "--tp", str(tp), "--threads", str(threads), "--layers", str(args.layers),
             "--new-tokens", str(args.new_tokens)]
    script = [str(Path(__file__).resolve()), *flags]
    command = ([sys.executable, *script] if tp == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={tp}", *script])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=1800)
    if out.returncode:
        raise SystemExit(out.stderr[-4000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tp", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    params = build_model(config(args.layers), device="meta").num_params()
    print(cpu_line())
    print(f"{params / 1e6:.0f}M-parameter model, fp32; {args.rounds} rounds; torch {torch.__version__}")
    results: dict[tuple[int, int], list[dict]] = {side_: [] for side_ in SIDES}
    for round_ in range(args.rounds):
        for tp, threads in list(SIDES)[:: 1 if round_ % 2 == 0 else -1]:
            results[tp, threads].append(side(tp, threads, args))
    print(f"| side | decode tok/s (batch 1) | serving output tok/s (concurrency {CONCURRENCY}) |")
    print("|---|---|---|")
    for (tp, threads), label in SIDES.items():
        decode = statistics.median(r["decode"] for r in results[tp, threads])
        serving = statistics.median(r["serving"] for r in results[tp, threads])
        print(f"| {label} | {decode:.1f} | {serving:.1f} |")


if __name__ == "__main__":
    main()
