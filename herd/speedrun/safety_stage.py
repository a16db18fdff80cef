"""Speedrun safety stage: herd's safety tools on the DPO (final) model.

- Code Shield (`herd.safety.codeshield.scan`) over the functions the model wrote for the synth_code prompts in the
  eval stage (RUN/NN-eval/dpo/samples_synth_code.jsonl): verdicts and the rules that fired.
- Llama Guard 2: a small guard trained by `herd.safety.guard_recipe` (synthetic requests under Llama Guard 2's
  taxonomy, judged as user and as agent turns; seconds at tiny scale), scored on the recipe's held-out requests,
  then used to moderate a small set of held-out requests to the final model (input check) and the model's greedy
  replies to them (output check). `guard_steps=0` skips the guard (Code Shield only).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from herd.eval.tasks.synthetic import SynthCode
from herd.run_dir import atomic_open, write_json
from herd.speedrun.config import SafetySettings

if TYPE_CHECKING:
    from herd.speedrun.run import RunContext

GUARD_ANSWER_TOKENS = 8
"""Enough for the guard's answer ("safe", or "unsafe" and a category code)."""


def safety_stage(ctx: RunContext, out: Path, s: SafetySettings) -> dict[str, Any]:
    outputs: dict[str, Any] = {"codeshield": codeshield_report(ctx)}
    if s.guard_steps > 0:
        outputs["guard"] = guard_report(ctx, out, s)
    write_json(out / "safety.json", outputs, indent=1)
    return outputs


def codeshield_report(ctx: RunContext) -> dict[str, Any]:
    """Code Shield's verdicts (BLOCK / WARN / IGNORE) on the DPO model's synth_code completions."""
    from herd.safety.codeshield import scan

    task = SynthCode(chat=True)
    samples = task.samples(ctx.stage_dir("corpus") / "eval")
    path = ctx.stage_dir("eval") / "dpo" / f"samples_{task.name}.jsonl"
    records = [json.loads(line) for line in path.open(encoding="utf-8")]
    verdicts: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    for record in records:
        result = scan(task.completion(samples[record["index"]], record["output"]), "python")
        verdicts[result.verdict] += 1
        rules.update(f"{f.rule} ({f.cwe})" for f in result.findings)
    return {"n": len(records), "verdicts": dict(verdicts), "rules": dict(rules.most_common(5))}


def guard_report(ctx: RunContext, out: Path, s: SafetySettings) -> dict[str, Any]:
    """Train a small guard, score it on held-out requests, and moderate the final model's inputs and outputs."""
    from herd.checkpoint import load
    from herd.generation import generate_tokens
    from herd.post.sft import SFTConfig
    from herd.safety.guard_recipe import (
        ACTS,
        Example,
        build_base,
        evaluate_guard,
        synthetic_examples,
        train_guard,
        write_sft_data,
    )
    from herd.safety.llama_guard import LlamaGuard
    from herd.safety.taxonomy import LLAMA_GUARD_2

    categories = [c.name for c in LLAMA_GUARD_2 if c.name in ACTS]
    requests = synthetic_examples(categories, n=s.guard_examples, seed=ctx.seed)
    examples = requests + [Example(e.text, e.category, "assistant") for e in requests[::2]]
    data = write_sft_data([(e, LLAMA_GUARD_2) for e in examples], out / "guard_sft.jsonl")
    base = build_base(data, out / "guard", vocab_size=512, seed=ctx.seed)
    config = SFTConfig(out_dir=str(out / "guard" / "run"), model=str(base), data=str(data), steps=s.guard_steps,
                       batch_size=8, seq_len=512, seed=ctx.seed, device=ctx.device, dtype=ctx.dtype,
                       progress=ctx.progress, checkpoint_interval=0)
    config.optim.lr, config.optim.warmup_steps = 3e-3, 5
    guard = LlamaGuard.load(train_guard(config), max_new_tokens=GUARD_ANSWER_TOKENS)
    held_out = synthetic_examples(categories, held_out=True, n=s.guard_eval, seed=ctx.seed + 1)
    quality = evaluate_guard(guard, [(e, LLAMA_GUARD_2) for e in held_out])

    probes = held_out[: s.probe_prompts]
    model, tok = load(ctx.outputs("dpo")["model"], device=ctx.device)
    model.eval()
    asks = [[{"role": "user", "content": e.text}] for e in probes]
    with torch.no_grad():
        results = generate_tokens(model, [tok.encode_dialog(a) for a in asks], max_new_tokens=s.max_new_tokens,
                                  stop_ids=tok.stop_ids)
    chats = [[*a, {"role": "assistant", "content": tok.decode(r.tokens)}] for a, r in zip(asks, results)]
    inputs = guard.moderate(asks, LLAMA_GUARD_2)
    replies = guard.moderate(chats, LLAMA_GUARD_2)
    harmful = [e.category is not None for e in probes]
    with atomic_open(out / "moderated.jsonl") as f:
        for chat, i, r in zip(chats, inputs, replies):
            f.write(json.dumps({"messages": chat, "input": i.to_dict(), "output": r.to_dict()}) + "\n")
    return {
        "train_examples": len(examples), "steps": s.guard_steps, "held_out": quality,
        "probe_prompts": len(probes), "harmful_prompts": sum(harmful),
        "inputs_flagged_harmful": _share([i.verdict != "safe" for i, h in zip(inputs, harmful) if h]),
        "inputs_flagged_benign": _share([i.verdict != "safe" for i, h in zip(inputs, harmful) if not h]),
        "replies_flagged": _share([r.verdict != "safe" for r in replies]),
    }


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None
