"""Does the speedrun's safety data cost math or addition? (issue 26's target: the final chat model's synthetic-math
and addition scores no lower than without the safety data, within 3 points.)

From one speedrun's annealed base, each arm reruns the post-training chain (the speedrun's own stage functions,
herd.speedrun.post_stages: SFT, then RM, rejection sampling, SFT2 and DPO through --until) at --seeds; the arm
"without" sets sft.safety_dialogs, rm.safety_pairs and dpo.safety_pairs to 0, "with" is the preset, and --arm adds
variants (NAME=key=value,key=value on top of the preset). Every model is scored on the SAME held-out prompts: the
run's 60 held-out math and addition items extended to --items with fresh ones no arm's training data asks (greedy,
0-shot chat, the eval stage's scoring), and the eval stage's 100 + 100 held-out refusal requests. Each figure
stands beside its bootstrap 90% interval; each arm's difference from "without" is paired item by item (per item, the
mean over seeds) with its paired bootstrap 90% interval, and the verdict reads it against the 3-point target.

    python benchmarks/safety_data_ablation.py --run RUN [--seeds 0 1] [--until dpo] [--items 300]
        [--reuse with:0=RUN --reuse without:0=OTHER_RUN] [--arm NAME=sft.math_dialogs=1000,sft.tool_dialogs=900]
        [--only ARM ... --train-only] [--stages sft2 dpo] [--set sft.math_dialogs=0 (every arm, e.g. an older preset)]

Train arms in parallel processes with --only ARM --train-only (one thread each, OMP_NUM_THREADS=1: on a loaded
2-core machine two threads ran SFT ~14x slower), then score them all in one call. At 300 items the paired interval of
a difference is about +-2.5 points (+-5 to +-8 at the eval stage's 60).

RUN is a finished tiny speedrun (its 01-corpus and 06-anneal are used, never written). --reuse takes an arm's
models at a seed from an existing run dir whose post stages ran with exactly that arm's settings (checked).
Results are cached under --out, so a rerun only trains and scores what is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import shutil
import time
from pathlib import Path
from statistics import mean
from typing import Any

from herd.checkpoint import load
from herd.config_overrides import to_dict
from herd.corpus.math import addition_question, make_problem
from herd.eval.evaluate import EvalOptions, evaluate_task
from herd.eval.tasks.synthetic import SynthAddition, SynthMath
from herd.run_dir import write_json
from herd.speedrun.eval_stages import difference, model_refusals, share_with_interval
from herd.speedrun.presets import preset_config
from herd.speedrun.run import STAGES, RunContext
from herd.speedrun.safety_data import held_out_requests

POST = ("sft", "rm", "rejection", "sft2", "dpo")
SCORED = ("sft", "sft2", "dpo")
BASE_STAGES = ("corpus", "anneal")
WITHOUT = "sft.safety_dialogs=0,rm.safety_pairs=0,dpo.safety_pairs=0"
TARGET = 0.03
"""The issue's tolerance: math and addition no more than 3 points below the no-safety-data arm."""
METRICS = ("synth_math", "synth_addition", "harmful_refused", "benign_refused")


def arm_context(run: Path, work: Path, overrides: list[str], seed: int) -> RunContext:
    """A RunContext in `work` whose corpus and annealed base are `run`'s (linked, never written)."""
    config = preset_config("tiny", [*overrides, f"seed={seed}", "progress=false"])
    ctx = RunContext(work, config)
    work.mkdir(parents=True, exist_ok=True)
    for name in BASE_STAGES:
        source = RunContext(run, config).stage_dir(name)
        link = ctx.stage_dir(name)
        if not link.exists():
            link.symlink_to(source.resolve())
        ctx.manifests[name] = json.loads((source / "speedrun.json").read_text())
    return ctx


def train_arm(ctx: RunContext, until: str, reuse: Path | None) -> None:
    """Run the post stages through `until`, taking each from `reuse` or an earlier call while it ran with the arm's
    settings (after the first stage that trains, every later one trains too)."""
    trained = False
    for name in POST[: POST.index(until) + 1]:
        for where in filter(None, (reuse and RunContext(reuse, ctx.config).stage_dir(name), ctx.stage_dir(name))):
            manifest = where / "speedrun.json"
            if trained or not manifest.is_file():
                continue
            done = json.loads(manifest.read_text())
            if same_settings(done.get("config", {}), ctx.settings(name)) and done.get("seed", ctx.seed) == ctx.seed:
                ctx.manifests[name] = {**done, "dir": str(where)}
                break
        else:
            trained = True
            manifest = ctx.stage_dir(name) / "speedrun.json"
            out = ctx.stage_dir(name)
            shutil.rmtree(out, ignore_errors=True)  # a stale run of other settings: the stage would resume it
            out.mkdir(parents=True)
            start = time.time()
            outputs = STAGES[name](ctx, out, ctx.settings(name))
            ctx.manifests[name] = {"config": to_dict(ctx.settings(name)), "seed": ctx.seed, "outputs": outputs,
                                   "duration_s": time.time() - start, "dir": str(out)}
            write_json(manifest, ctx.manifests[name], indent=1, default=str)
            print(f"  {ctx.run.name} {name}: {ctx.manifests[name]['duration_s']:.0f} s", flush=True)


def same_settings(recorded: dict[str, Any], settings: Any) -> bool:
    """Whether a stage recorded `settings`: a field it does not record (added since) must be at its default."""
    now = to_dict(settings)
    return all(recorded.get(f.name, f.default) == now[f.name] for f in dataclasses.fields(settings)) and set(
        recorded) <= set(now)


def training_questions(ctx: RunContext) -> set[str]:
    """Every user turn and prompt of the data the arm's stages trained on (and the corpus's post data)."""
    files = list((ctx.stage_dir("corpus") / "post").glob("*.jsonl"))
    files += [f for name in POST if name in ctx.manifests for f in Path(ctx.manifests[name]["dir"]).glob("*.jsonl")
              if f.name != "metrics.jsonl"]
    return set().union(*map(questions, files))


def questions(path: Path) -> set[str]:
    """The user turns and prompts of a JSONL file of dialogs or preference pairs."""
    seen = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        prompt = record.get("prompt", [])  # a question, or a dialog's turns (tool pairs)
        turns = record.get("messages", []) + (prompt if isinstance(prompt, list) else [])
        seen.update(m["content"] for m in turns if m.get("role") == "user")
        seen.add(prompt if isinstance(prompt, str) else "")
    return seen


def held_out_items(corpus_eval: Path, seen: set[str], n: int, out: Path) -> Path:
    """math.jsonl and addition.jsonl in `out`: the corpus's held-out items, then fresh ones no arm trained on, to n."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2612)
    for name, make in (("math", make_problem), ("addition", lambda r: addition_question(r.randint(10, 99),
                                                                                          r.randint(10, 99)))):
        rows = [json.loads(line) for line in (corpus_eval / f"{name}.jsonl").read_text().splitlines()][:n]
        asked = seen | {r["question"] for r in rows}
        while len(rows) < n:
            p = make(rng)
            if p.question not in asked:
                asked.add(p.question)
                rows.append({"question": p.question, "answer": p.solution, "gold": str(p.answer)})
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def score_model(model_dir: str, data: Path, refusal: tuple[list[str], list[str]], cache: Path) -> dict[str, list]:
    """Per-item flags of one model: math and addition exact match, harmful and benign refusals."""
    if cache.is_file():
        return json.loads(cache.read_text())
    model, tok = load(model_dir, device="cpu")
    model.eval()
    flags, cpu = {}, {}
    for task in (SynthMath(chat=True), SynthAddition(chat=True)):
        start = time.process_time()
        _, records = evaluate_task(model, tok, task, data, EvalOptions(chat=True, batch_size=32))
        flags[task.name] = [r["metrics"][task.metric] for r in records]
        cpu[task.name] = time.process_time() - start
    flags |= model_refusals(model, tok, *refusal, cache.with_suffix(".refusals.jsonl"))
    print(f"  scored {cache.stem}: CPU s per item " + ", ".join(f"{k} {v / len(flags[k]):.2f}" for k, v in cpu.items()),
          flush=True)
    write_json(cache, flags)
    return flags


def interval(flags: list[float]) -> str:
    s = share_with_interval(flags)
    return f"{100 * s['rate']:5.1f} [{100 * s['low']:5.1f}, {100 * s['high']:5.1f}]"


def per_item(runs: list[dict[str, list]], metric: str) -> list[float]:
    """Each item's mean over seeds."""
    return [mean(map(float, row)) for row in zip(*(r[metric] for r in runs), strict=True)]


def verdict(d: dict[str, Any]) -> str:
    if d["low"] >= -TARGET:
        return "within 3 points"
    return "costs > 3 points" if d["high"] < -TARGET else "undecided"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished tiny speedrun (base and corpus)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/safety_data_ablation"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--until", choices=POST, default="dpo")
    parser.add_argument("--stages", nargs="+", choices=SCORED, default=list(SCORED), help="models scored")
    parser.add_argument("--items", type=int, default=400, help="held-out math and addition items each")
    parser.add_argument("--refusal-prompts", type=int, default=100)
    parser.add_argument("--arm", action="append", default=[], help="NAME=key=value,key=value (on the preset)")
    parser.add_argument("--only", nargs="+", help="these arms alone (e.g. to train arms in parallel processes)")
    parser.add_argument("--exclude", type=Path, nargs="*", default=[],
                        help="more JSONL files whose questions the held-out items must avoid (an arm still training)")
    parser.add_argument("--train-only", action="store_true", help="train the arms, score nothing")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides of every arm (before its own)")
    parser.add_argument("--reuse", action="append", default=[], help="ARM:SEED=RUN_DIR")
    args = parser.parse_args()
    arms = {"with": [], "without": WITHOUT.split(",")}
    arms |= {a.split("=", 1)[0]: a.split("=", 1)[1].split(",") for a in args.arm}
    arms = {a: args.set + o for a, o in arms.items()}
    reuse = {r.split("=", 1)[0]: Path(r.split("=", 1)[1]) for r in args.reuse}

    contexts = {}
    arms = {a: o for a, o in arms.items() if not args.only or a in args.only}
    for arm, overrides in arms.items():
        for seed in args.seeds:
            ctx = arm_context(args.run, args.out / f"{arm}-s{seed}", overrides, seed)
            train_arm(ctx, args.until, reuse.get(f"{arm}:{seed}"))
            contexts[arm, seed] = ctx
    if args.train_only:
        return
    seen = set().union(*(training_questions(c) for c in contexts.values()), *map(questions, args.exclude))
    data = held_out_items(args.run / "01-corpus" / "eval", seen, args.items, args.out / "eval")
    refusal = held_out_requests(args.refusal_prompts, 0)
    stages = [s for s in args.stages if POST.index(s) <= POST.index(args.until)]
    items = hashlib.sha256(b"".join(sorted(f.read_bytes() for f in data.glob("*.jsonl")))).hexdigest()[:10]
    flags = {(arm, seed, stage): score_model(ctx.outputs(stage)["model"], data, refusal,
                                             args.out / "scores" / f"{arm}-s{seed}-{stage}-{items}.json")
             for (arm, seed), ctx in contexts.items() for stage in stages}

    print(f"\nheld-out items: {args.items} math, {args.items} addition, {args.refusal_prompts} + "
          f"{args.refusal_prompts} refusal requests; seeds {args.seeds}; % with bootstrap 90% interval "
          "(per item, the mean over seeds); diff = arm - without, paired by item")
    print(f"{'stage':6} {'metric':16} " + " ".join(f"{a:>22}" for a in arms)
          + " ".join(f"  {'diff ' + a:>24} verdict" for a in arms if a != "without"))
    for stage in stages:
        for metric in METRICS:
            rows = {a: per_item([flags[a, s, stage] for s in args.seeds], metric) for a in arms}
            line = f"{stage:6} {metric:16} " + " ".join(f"{interval(rows[a]):>22}" for a in arms)
            for a in arms:
                if a != "without":
                    d = difference(rows["without"], rows[a])
                    text = f"{100 * d['rate']:+5.1f} [{100 * d['low']:+5.1f}, {100 * d['high']:+5.1f}]"
                    line += f"  {text:>24} " + (verdict(d) if metric.startswith("synth") else "")
            print(line)
    per_seed = {f"{a}-s{s}-{st}": {m: mean(map(float, flags[a, s, st][m])) for m in METRICS}
                for (a, s, st) in flags}
    print("\nper seed:", json.dumps(per_seed, indent=None))


if __name__ == "__main__":
    main()
