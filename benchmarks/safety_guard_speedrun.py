"""The speedrun's guard levers: fine-tune a speedrun's annealed base into a guard (the safety stage's path,
herd.safety.guard_train) at several settings of the same token budget and print each one's held-out scores beside
the base rate and what answering "unsafe" to everything scores, with its wall time (medians over --seeds).

    python benchmarks/safety_guard_speedrun.py --base RUN/06-anneal/model [--runs "8x100@2e-3 2x600@2e-3"] [--seeds 3]

A run is ROWSxSTEPS@LR (rows of --seq-len tokens per step), optionally +lg2 (every training prompt under Llama
Guard 2's own taxonomy) or +fullSHARE (that share of them, e.g. +full0.5; else GuardTrainConfig's default) and
+plain (each prompt laid whole, no shared category header: SFTConfig.share_prefixes off) and +noiseRATE (the
training wordings' filler-word rate, GuardTrainConfig.noise, e.g. +noise0). "examples/row" is how
many prompts a packed row holds. Get a base with `herd speedrun --preset tiny` (or any earlier run's
06-anneal/model). Besides the held-out sets, "training wordings" scores the guard under Llama Guard 2's taxonomy
on fresh examples in the training wordings: codes wrong there too mean the guard has not learned them,
codes right there but wrong held out mean it does not generalise.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from statistics import median

from herd.safety.guard_recipe import evaluate_guard
from herd.safety.guard_train import GuardTrainConfig, guard_sft, train_guard_from_base
from herd.safety.llama_guard import LlamaGuard
from herd.safety.moderation_set import moderation_examples
from herd.safety.taxonomy import LLAMA_GUARD_2

RUN = re.compile(r"(\d+)x(\d+)@([0-9.e-]+)(?:(\+lg2)|\+full([0-9.]+))?(\+plain)?(?:\+noise([0-9.]+))?")
COLUMNS = ("f1", "precision", "recall", "fpr", "auprc", "base_rate", "constant_f1", "category_accuracy",
           "unlisted_flagged", "worst_category_recall")


def run(base: str, spec: str, seed: int, args: argparse.Namespace) -> tuple[float, float, dict]:
    match = RUN.fullmatch(spec)
    if not match:
        raise SystemExit(f"bad run {spec!r}: write ROWSxSTEPS@LR, e.g. 2x600@2e-3, 2x600@2e-3+lg2, 4x800@2e-3+full0.5")
    sft = guard_sft()
    sft.batch_size, sft.steps, sft.optim.lr = int(match[1]), int(match[2]), float(match[3])
    sft.seq_len, sft.optim.warmup_steps, sft.progress, sft.device = args.seq_len, min(20, sft.steps // 5), False, "cpu"
    sft.share_prefixes = not match[6]
    share = {"full_taxonomy_share": 1.0 if match[4] else float(match[5])} if match[4] or match[5] else {}
    share |= {"noise": float(match[7])} if match[7] else {}
    config = GuardTrainConfig(base=base, out_dir=f"{args.out}/{spec}-{seed}", examples=args.examples,
                              held_out=args.held_out, seed=seed, sft=sft, **share)
    start = time.perf_counter()
    result = train_guard_from_base(config)
    seconds = time.perf_counter() - start
    figures = json.loads((Path(config.out_dir) / "manifest.json").read_text())["figures"]
    trained = moderation_examples(args.held_out, seed=seed + 7)
    scores = {**result["held_out"], "training_wordings": evaluate_guard(LlamaGuard.load(result["guard"]),
                                                                        [(e, LLAMA_GUARD_2) for e in trained])}
    return seconds, figures["dialogs"] / figures["rows"], scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="a speedrun's annealed base (RUN/06-anneal/model)")
    parser.add_argument("--runs", default="8x100@2e-3 2x600@2e-3 2x600@2e-3+lg2")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--examples", type=int, default=2400)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=1, help="runs per setting (seeds 0..N-1); medians printed")
    parser.add_argument("--out", default="/tmp/herd_guard_speedrun")
    args = parser.parse_args()

    print("| run | taxonomy | seconds | examples/row | " + " | ".join(COLUMNS) + " | learned |")
    print("|---|---|---:|---:|" + "---:|" * len(COLUMNS) + "---|")
    for spec in args.runs.split():
        runs = [run(args.base, spec, seed, args) for seed in range(args.seeds)]
        for name in runs[0][2]:
            scores = [_with_worst(r[2][name]) for r in runs]
            cells = " | ".join(_median([m[k] for m in scores]) for k in COLUMNS)
            learned = sum(m["learned"] for m in scores)
            print(f"| {spec} | {name} | {median(r[0] for r in runs):.0f} | {median(r[1] for r in runs):.2f} | {cells} "
                  f"| {learned}/{len(runs)} |", flush=True)


def _with_worst(metrics: dict) -> dict:
    """The metrics and their lowest per-category recall (issue 26's target: >= 0.8 for every category present)."""
    return {**metrics, "worst_category_recall": min(metrics["per_category_recall"].values(), default=None)}


def _median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{median(known):.3f}" if known else "n/a"


if __name__ == "__main__":
    main()
