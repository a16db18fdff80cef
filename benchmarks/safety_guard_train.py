"""Train a small guard on CPU with herd.safety.guard_recipe and report its herd.safety.guard_metrics scores on the
held-out template ("did not learn" when its AUPRC is not above the base rate or it flags most benign requests),
beside the release's figures for Llama Guard 2 8B on Meta's data (F1 0.915, AUPRC 0.974, FPR 0.040).

    python benchmarks/safety_guard_train.py [--seed 0] [--out /tmp/guard]

The defaults are the recipe (about 20 minutes on 2 cores): a 4-layer, dim-64 guard trained for 3,000 steps of 16
rows in a curriculum of 4, 8 and then all 13 categories, on requests reworded with filler-word noise 0.15. Options
change it: --categories, --steps, --curriculum 2,4,8, --paraphrases, --noise 0 (or one rate per phase), --layers ...
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
from herd.safety.guard_metrics import headline
from herd.safety.llama_guard import LlamaGuard

RELEASE = {"f1": 0.915, "auprc": 0.974, "fpr": 0.040}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=len(UNIVERSE), help="first N categories of the universe")
    parser.add_argument("--max-size", type=int, default=4, help="most categories in one prompt's taxonomy")
    parser.add_argument("--train", type=int, default=4000, help="records per phase")
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--steps", type=int, default=3000, help="in all, split evenly over the phases")
    parser.add_argument("--vocab", type=int, default=900, help="BPE vocabulary (900: about one token per word)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4, help="2-layer guards never learn to read the taxonomy")
    parser.add_argument("--batch", type=int, default=16, help="rows of 512 tokens per step")
    parser.add_argument("--curriculum", type=lambda v: [int(x) for x in v.split(",") if x], default=[4, 8],
                        help='universe sizes trained first, e.g. 2,4,8 ("": none); the steps split over the phases')
    parser.add_argument("--paraphrases", action="store_true", help="train on guard_recipe.PARAPHRASES too")
    parser.add_argument("--noise", type=lambda v: [float(x) for x in v.split(",")], default=[0.15],
                        help="filler-word rate in training requests (guard_recipe.add_noise): one value, or one per "
                             "phase, e.g. 0,0,0.3")
    parser.add_argument("--seed", type=int, default=0, help="training data, initial weights and batch order")
    parser.add_argument("--out", default="/tmp/herd_guard_bench")
    args = parser.parse_args()

    universe = UNIVERSE[: args.categories]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phases = [*args.curriculum, len(universe)]
    noise = args.noise * len(phases) if len(args.noise) == 1 else args.noise
    if len(noise) != len(phases):
        parser.error(f"--noise takes one value or one per phase ({len(phases)})")
    datas = []
    for i, size in enumerate(phases):  # a curriculum: each phase's requests and taxonomies from the first `size`
        names, seed = [c.name for c in universe[:size]], 10 * i + 100 * args.seed
        examples = synthetic_examples(names, n=args.train, seed=seed, paraphrases=args.paraphrases, noise=noise[i])
        records = guard_records(examples, universe[:size], max_size=args.max_size, seed=seed)
        datas.append(write_sft_data(records, out / f"train{i}.jsonl"))
    names = [c.name for c in universe]
    tests = {  # the held-out template, and new draws of the training templates (new taxonomies for known wording)
        "held-out template": guard_records(synthetic_examples(names, n=args.test, seed=1, held_out=True), universe,
                                           max_size=args.max_size, seed=1),
        "training templates": guard_records(synthetic_examples(names, n=args.test, seed=7), universe,
                                            max_size=args.max_size, seed=7),
    }
    model = build_base(datas[-1], out, vocab_size=args.vocab, dim=args.dim, n_layers=args.layers, seed=args.seed)
    start = time.perf_counter()
    for i, data in enumerate(datas):
        config = SFTConfig(out_dir=str(out / f"run{i}"), model=str(model), data=str(data),
                           steps=args.steps // len(datas), batch_size=args.batch, seq_len=512, seed=args.seed,
                           device="cpu", progress=False, checkpoint_interval=0)
        config.optim.lr, config.optim.warmup_steps = args.lr, 20
        model = guard_dir = train_guard(config)
    trained_s = time.perf_counter() - start
    guard = LlamaGuard.load(guard_dir)
    print(f"{len(universe)} categories, trained in {trained_s:.0f} s")
    results = {name: evaluate_guard(guard, records) for name, records in tests.items()}
    for name, metrics in results.items():
        print(f"{name}: {headline(metrics)}")
        print(json.dumps(metrics))
    held_out = results["held-out template"]
    if not held_out["learned"]:
        print("the guard did not learn: no comparison with Llama Guard 2")
        return
    for key, value in RELEASE.items():
        print(f"{key}: herd tiny guard {held_out[key]:.3f} on the held-out template | Llama Guard 2 8B (release, its "
              f"data) {value:.3f}")


if __name__ == "__main__":
    main()
