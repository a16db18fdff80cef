"""Each trick of herd.model.cpu_tuning against the plain path it replaces (`HERD_CPU_PLAIN=1`), on this CPU.

    python benchmarks/cpu_tuning.py [--only prepack-serve,prepack-loss,train-step,int8,decode,decode-eager]
                                     [--rounds 7] [--threads 1]

Each case times the trick and the plain path call by call, alternately (the machine's slow and fast phases hit both
alike), `--rounds` rounds of a few calls each; it prints the medians over rounds of each side's fastest call and the
median over rounds of plain time / trick time - 1 (the gain), with its range over rounds (the noise), by the wall
clock and by CPU time.
A trick stays in herd where the gain is at least 5% (benchmarks/README.md). Cases:
- prepack-serve: a decode step's linears (16 rows, fp32 and bf16) through a dim-512 x 4-layer model with a 32K
  vocabulary, packed (`herd.serve.packed`) or not.
- prepack-loss: the chunked head + loss (`linear_cross_entropy`), forward and backward, 1,024 rows x dim 256 into
  an 8K and a 32K vocabulary, fp32 and bf16 autocast.
- int8: an int8 model's forward of 16 rows (as in decode), torch's int8 kernel vs dequantize-then-multiply.
- decode: greedy generation with the compiled decode step (dim 512 x 4 layers, 1 row, 64 new tokens), inductor
  with herd's decompositions vs plain inductor (each compiled once, before timing).
- decode-eager: the same generation with the eager decode step, whose trick is the one-row head through oneDNN
  (`cpu_tuning.linear`).
- train-step: herd's training step (`benchmarks/train_cpu.py`'s, dim 256 x 4 layers, vocab 8,192, 4 x 256 tokens),
  fp32 and bf16 autocast, whose trick is the loss head's prepacking (a plain bf16 head reorders its weight at
  every chunk into fresh buffers, which page-fault).
On a machine shared with other work, `--threads 1` and the CPU-time columns give the steadiest figures.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # herd, train_cpu

from herd.model import ModelConfig, Transformer, build_model, cpu_tuning

CASES = ("prepack-serve", "prepack-loss", "train-step", "int8", "decode", "decode-eager")


def plain(on: bool) -> None:
    """Switch the plain path on or off for this process (cpu_tuning reads it at each call)."""
    os.environ[cpu_tuning.PLAIN_ENV] = "1" if on else "0"


def once(fn: Callable[[], object], on: bool) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all threads) of one call of `fn` with the plain path on or off."""
    plain(on)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(name: str, trick: Callable[[], object], reference: Callable[[], object], rounds: int, repeat: int) -> None:
    """Time `trick` (tricks on) and `reference` (plain) call by call, alternately; print the medians over rounds of
    each round's fastest call, and the median over rounds of the gain (plain / trick - 1) of those, by the wall
    clock and by CPU time (steadier on a shared machine, above all with --threads 1).

    The fastest of a round's calls, not their mean: other processes on a shared machine only ever slow a call."""
    once(trick, False), once(reference, True)  # warm-up
    best: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(rounds):
        calls = []
        for call in range(repeat):  # who goes first alternates too: a call can leave the next one warm caches
            if call % 2:
                plain_first = once(reference, True)
                calls.append((once(trick, False), plain_first))
            else:
                calls.append((once(trick, False), once(reference, True)))
        for on in (False, True):
            best[on].append(tuple(min(call[on][clock] for call in calls) for clock in (0, 1)))
    plain(False)
    line = f"{name:<36}"
    for clock, label in ((0, "wall"), (1, "cpu")):
        tricks, plains = [b[clock] for b in best[False]], [b[clock] for b in best[True]]
        gains = [p / t - 1 for t, p in zip(tricks, plains, strict=True)]
        trick_ms, plain_ms = statistics.median(tricks) * 1e3, statistics.median(plains) * 1e3
        line += (f" | {label}: trick {trick_ms:8.2f} ms, plain {plain_ms:8.2f} ms, gain "
                 f"{statistics.median(gains) * 100:+6.1f}% ({min(gains) * 100:+.0f}..{max(gains) * 100:+.0f}%)")
    print(line, flush=True)


def model(dtype: torch.dtype = torch.float32) -> Transformer:
    config = ModelConfig(dim=512, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=32768, max_seq_len=512)
    built = build_model(config, dtype=dtype)
    built.init_weights(0)
    return built.eval()


@torch.inference_mode()
def prepack_serve(args: argparse.Namespace) -> None:
    from herd.serve.packed import pack_linears

    ids = torch.randint(0, 32768, (16, 1))
    for dtype in (torch.float32, torch.bfloat16):
        base = model(dtype)
        packed = pack_linears(copy.deepcopy(base))
        compare(f"prepack-serve {str(dtype)[6:]}, 16 rows", lambda: packed(ids), lambda: base(ids), args.rounds, 4)


def prepack_loss(args: argparse.Namespace) -> None:
    from herd.train.fused_loss import linear_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(1024, 256, requires_grad=True)
    targets = torch.randint(0, 8192, (1024,))
    for vocab in (8192, 32768):
        weight = (torch.randn(vocab, 256) * 0.02).requires_grad_()
        for dtype in (torch.float32, torch.bfloat16):

            def step() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    linear_cross_entropy(hidden, weight, targets).backward()
                hidden.grad = weight.grad = None

            compare(f"prepack-loss {str(dtype)[6:]}, 1024 x {vocab // 1024}K", step, step, args.rounds, 4)


@torch.inference_mode()
def int8(args: argparse.Namespace) -> None:
    from herd.serve.quantize import quantize_int8

    quantized = quantize_int8(model())
    ids = torch.randint(0, 32768, (16, 1))
    compare("int8 forward, 16 rows", lambda: quantized(ids), lambda: quantized(ids), args.rounds, 4)


def greedy_generation(args: argparse.Namespace, compile: bool, new_tokens: int) -> None:
    """One row of a 32-token prompt decoded greedily for `new_tokens` by the compiled or the eager step."""
    from herd.generation import generate_tokens

    base = model()
    prompt = [torch.randint(0, 32768, (32,)).tolist()]

    def run() -> None:
        generate_tokens(base, prompt, max_new_tokens=new_tokens, compile=compile)

    kind = "compiled" if compile else "eager"
    compare(f"decode {kind}, 1 row x {new_tokens} tokens", run, run, args.rounds, 2)


def decode(args: argparse.Namespace) -> None:
    greedy_generation(args, compile=True, new_tokens=64)


def decode_eager(args: argparse.Namespace) -> None:
    greedy_generation(args, compile=False, new_tokens=32)


def train_step(args: argparse.Namespace) -> None:
    from train_cpu import herd_step

    torch.manual_seed(0)
    for dtype in ("float32", "bfloat16"):
        shape = argparse.Namespace(dim=256, layers=4, heads=8, kv_heads=4, vocab=8192, seq_len=256, dtype=dtype)
        tokens = torch.randint(0, shape.vocab, (4, shape.seq_len + 1))
        batch = (tokens[:, :-1], tokens[:, 1:].clone(), torch.zeros(4, shape.seq_len, dtype=torch.long))
        step = herd_step(shape, batch, compile=False)
        compare(f"train-step {dtype}, 4 x 256 tokens", step, step, args.rounds, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 prepacking: "
          f"{cpu_tuning.cpu_supports(torch.bfloat16)}; {args.rounds} rounds, trick and plain alternated")
    for case in args.only.split(","):
        globals()[case.replace("-", "_")](args)


if __name__ == "__main__":
    main()
