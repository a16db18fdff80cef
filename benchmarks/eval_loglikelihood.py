"""Loglikelihood requests/s on CPU: herd with shared-prefix reuse vs herd's plain full-sequence path
(the way lm-eval's HF backend scores), on an MMLU-shaped 5-shot, 4-choice workload. Prints the ratio.

    python benchmarks/eval_loglikelihood.py [--preset llama3-125m] [--questions 16]
"""

import argparse
import time

import torch
from cpu_info import cpu_line

from herd.checkpoint import load
from herd.eval import encode_pair, loglikelihood_tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llama3-125m")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tok = load(args.preset)
    model.eval()
    shot = "Which planet is known as the red planet?\nA. Venus\nB. Mars\nC. Jupiter\nD. Saturn\nAnswer: B\n\n"
    pairs = [
        encode_pair(tok, shot * 5 + f"Question {q}: what is {q} + {q}?\nA. {2*q}\nB. {q}\nC. 0\nD. 1\nAnswer:", f" {c}")
        for q in range(args.questions) for c in "ABCD"
    ]
    print(cpu_line())
    timings = {}
    for name, share in (("plain", False), ("shared-prefix", True)):
        loglikelihood_tokens(model, pairs[:8], batch_size=args.batch_size, share_prefix=share)  # warm-up
        start = time.perf_counter()
        loglikelihood_tokens(model, pairs, batch_size=args.batch_size, share_prefix=share)
        timings[name] = time.perf_counter() - start
        print(f"{name:>14}: {len(pairs) / timings[name]:8.1f} requests/s")
    print(f"speedup: {timings['plain'] / timings['shared-prefix']:.2f}x ({args.preset}, {len(pairs)} requests)")


if __name__ == "__main__":
    main()
