"""Fine-tune a guard by `herd guard train`'s path (herd.safety.guard_train) and print its held-out scores in new
wordings, under Llama Guard 2's taxonomy and under custom ones, beside what answering "unsafe" to everything scores
and the release's figures for Llama Guard 2 8B on Meta's data (F1 0.915, AUPRC 0.974, FPR 0.040).

    python benchmarks/safety_guard_finetune.py [--base DIR] [--steps 600] [--out /tmp/guard_ft]

Without --base it starts from a random 4-layer, dim-64 model with a BPE tokenizer trained on the guard data
(guard_recipe.build_base): the from-scratch control for a pretrained base.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from herd.safety.guard_metrics import headline
from herd.safety.guard_recipe import build_base
from herd.safety.guard_train import GuardTrainConfig, guard_sft_data, train_guard_from_base

RELEASE = {"f1": 0.915, "auprc": 0.974, "fpr": 0.040}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="a checkpoint herd.load reads (default: a random 4-layer base)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--layers", type=int, default=4, help="of the random base")
    parser.add_argument("--dim", type=int, default=64, help="of the random base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/herd_guard_finetune")
    args = parser.parse_args()

    config = GuardTrainConfig(base=args.base or "<random>", out_dir=args.out, examples=args.examples,
                              held_out=args.held_out, seed=args.seed)
    if args.base is None:
        base = build_base(guard_sft_data(config), Path(args.out) / "random", vocab_size=900, dim=args.dim,
                          n_layers=args.layers, seed=args.seed)
        config.base = str(base)
    config.sft.steps, config.sft.optim.lr, config.sft.progress, config.sft.device = args.steps, args.lr, False, "cpu"
    config.sft.optim.warmup_steps = min(config.sft.optim.warmup_steps, args.steps)
    start = time.perf_counter()
    result = train_guard_from_base(config)
    print(f"base {config.base}, {args.steps} steps, trained and scored in {time.perf_counter() - start:.0f} s")
    for name, metrics in result["held_out"].items():
        print(f"{name}: {headline(metrics)}")
        print(json.dumps({k: metrics[k] for k in ("per_category_recall", "category_accuracy", "malformed")}))
    held_out = result["held_out"]["llama_guard_2"]
    if held_out["learned"]:
        print(" | ".join(f"{k}: herd {held_out[k]:.3f} vs Llama Guard 2 8B (its data) {v:.3f}" for k, v in RELEASE.items()))


if __name__ == "__main__":
    main()
