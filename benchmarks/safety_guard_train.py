"""Train a small guard on CPU with herd.safety.guard_recipe and report F1 / AUPRC / FPR on the held-out template,
beside the release's figures for Llama Guard 2 8B on Meta's data (F1 0.915, AUPRC 0.974, FPR 0.040).

    python benchmarks/safety_guard_train.py [--categories 13] [--steps 600] [--out /tmp/guard]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from herd.post.sft import SFTConfig
from herd.safety.guard_recipe import (
    UNIVERSE,
    build_base,
    evaluate_guard,
    guard_records,
    synthetic_examples,
    train_guard,
    write_sft_data,
)
from herd.safety.llama_guard import LlamaGuard

RELEASE = {"f1": 0.915, "auprc": 0.974, "fpr": 0.040}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=len(UNIVERSE), help="first N categories of the universe")
    parser.add_argument("--max-size", type=int, default=4, help="most categories in one prompt's taxonomy")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--vocab", type=int, default=900, help="BPE vocabulary (900: about one token per word)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--out", default="/tmp/herd_guard_bench")
    args = parser.parse_args()

    universe = UNIVERSE[: args.categories]
    names = [c.name for c in universe]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = guard_records(synthetic_examples(names, n=args.train, seed=0), universe, max_size=args.max_size, seed=0)
    test = guard_records(synthetic_examples(names, n=args.test, seed=1, held_out=True), universe,
                         max_size=args.max_size, seed=1)
    data = write_sft_data(train, out / "train.jsonl")
    base = build_base(data, out, vocab_size=args.vocab, dim=args.dim, n_layers=args.layers)
    config = SFTConfig(out_dir=str(out / "run"), model=str(base), data=str(data), steps=args.steps, batch_size=8,
                       seq_len=512, device="cpu", progress=False, checkpoint_interval=0)
    config.optim.lr, config.optim.warmup_steps = args.lr, 20
    start = time.perf_counter()
    guard_dir = train_guard(config)
    trained_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate_guard(LlamaGuard.load(guard_dir), test)
    metrics.update(train_s=round(trained_s, 1), eval_s=round(time.perf_counter() - start, 1), categories=len(universe))
    print(json.dumps(metrics, indent=1))
    for key, value in RELEASE.items():
        print(f"{key}: herd tiny guard {metrics[key]:.3f} | Llama Guard 2 8B (release, its data) {value:.3f}")


if __name__ == "__main__":
    main()
