"""Speedrun safety stage: herd's safety tools on the DPO (final) model.

- Code Shield (`herd.safety.codeshield.scan`) over the functions the model wrote for the synth_code prompts in the
  eval stage (RUN/NN-eval/dpo/samples_synth_code.jsonl): verdicts and the rules that fired.
- Llama Guard 2: the speedrun's own annealed base fine-tuned into a guard by `herd guard train`'s path
  (herd.safety.guard_train: SFT on the Llama Guard 2 prompt over herd's moderation set), as Meta fine-tuned Llama 3 8B
  into Llama Guard 2; scored on held-out wordings (herd.safety.guard_metrics, under Llama Guard 2's taxonomy and
  under custom ones), then used to moderate held-out requests to the final model, half harmful, half benign
  look-alikes (herd.speedrun.safety_data; input check), and the model's greedy replies to them (output check). `guard_steps=0` skips the guard (Code Shield only).
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
from herd.speedrun.safety_data import held_out_requests

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
    """Fine-tune the annealed base into a guard, score it on held-out wordings, and moderate the final model's
    inputs and outputs."""
    from herd.checkpoint import load
    from herd.generation import generate_tokens
    from herd.safety.guard_train import GuardTrainConfig, guard_sft, train_guard_from_base
    from herd.safety.llama_guard import LlamaGuard
    from herd.safety.taxonomy import LLAMA_GUARD_2

    sft = guard_sft()
    sft.steps, sft.batch_size, sft.seq_len = s.guard_steps, s.guard_batch_size, s.guard_seq_len
    sft.optim.lr = s.guard_lr
    sft.optim.warmup_steps = min(sft.optim.warmup_steps, s.guard_steps // 5)
    sft.device, sft.dtype, sft.progress = ctx.device, ctx.dtype, ctx.progress
    base = ctx.outputs("anneal")["model"]
    trained = train_guard_from_base(GuardTrainConfig(base=base, out_dir=str(out / "guard"), examples=s.guard_examples,
                                                     held_out=s.guard_eval, seed=ctx.seed, sft=sft))
    scores = trained.get("held_out")
    guard = LlamaGuard.load(trained["guard"], max_new_tokens=GUARD_ANSWER_TOKENS)
    guard.model.to(ctx.device)

    harmful_asks, benign_asks = held_out_requests(s.probe_prompts - s.probe_prompts // 2, ctx.seed)
    probes = harmful_asks + benign_asks[: s.probe_prompts // 2]
    harmful = [i < len(harmful_asks) for i in range(len(probes))]
    model, tok = load(ctx.outputs("dpo")["model"], device=ctx.device)
    model.eval()
    asks = [[{"role": "user", "content": text}] for text in probes]
    with torch.no_grad():
        results = generate_tokens(model, [tok.encode_dialog(a) for a in asks], max_new_tokens=s.max_new_tokens,
                                  stop_ids=tok.stop_ids)
    chats = [[*a, {"role": "assistant", "content": tok.decode(r.tokens)}] for a, r in zip(asks, results)]
    inputs = guard.moderate(asks, LLAMA_GUARD_2)
    replies = guard.moderate(chats, LLAMA_GUARD_2)
    with atomic_open(out / "moderated.jsonl") as f:
        for chat, i, r in zip(chats, inputs, replies):
            f.write(json.dumps({"messages": chat, "input": i.to_dict(), "output": r.to_dict()}) + "\n")
    return {
        "base": base, "guard": trained["guard"], "train_examples": s.guard_examples, "steps": s.guard_steps,
        **({"held_out": scores["llama_guard_2"], "custom_taxonomies": scores["custom_taxonomies"]} if scores else {}),
        "probe_prompts": len(probes), "harmful_prompts": sum(harmful),
        "inputs_flagged_harmful": _share([i.verdict != "safe" for i, h in zip(inputs, harmful) if h]),
        "inputs_flagged_benign": _share([i.verdict != "safe" for i, h in zip(inputs, harmful) if not h]),
        "replies_flagged": _share([r.verdict != "safe" for r in replies]),
        "replies_to_benign_flagged": _share([r.verdict != "safe" for r, h in zip(replies, harmful) if not h]),
    }


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None
