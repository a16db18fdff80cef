"""Speedrun post-training stages, Llama 3's round: SFT on the corpus's chat dialogs, a reward model on its
preference pairs, rejection sampling (the SFT policy's best of K replies by reward), a second SFT round from the SFT
model on those replies mixed with the dialogs (`sft2`), and DPO from the second round's model. SFT's dialogs and the
reward model's and DPO's pairs include safety data (herd.speedrun.safety_data): refusals of harmful requests, help
with benign look-alikes; SFT's dialogs also teach the calculator tool (herd.speedrun.tool_data), and DPO's pairs
prefer copying its result right and calling it."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herd.post.stage import fine_tuning_optim
from herd.run_dir import atomic_open
from herd.speedrun.config import DPOSettings, PostSettings, PrefSettings, RejectionSettings, SFT2Settings, SFTSettings
from herd.speedrun.on_policy import dpo_on_policy_pairs
from herd.speedrun.safety_data import held_out_pairs, safety_dialogs, safety_pairs
from herd.speedrun.tool_data import tool_dialogs, tool_pairs

if TYPE_CHECKING:
    from herd.post import PostResult
    from herd.speedrun.run import RunContext


def stage_fields(ctx: RunContext, out: Path, s: PostSettings, model: str) -> dict[str, Any]:
    """The `PostConfig` fields every post-training stage shares: run dir, model, shapes, seed, device, dtype, schedule."""
    return {
        "out_dir": str(out), "model": model, "steps": s.steps, "batch_size": s.batch_size, "seq_len": s.seq_len,
        "seed": ctx.seed, "device": ctx.device, "dtype": ctx.dtype, "progress": ctx.progress,
        "optim": dataclasses.replace(fine_tuning_optim(), lr=s.lr, warmup_steps=min(10, s.steps // 5), anneal_steps=0),
        "checkpoint_interval": max(s.steps // 2, 1), "keep_last": 1,
    }


def _outputs(result: PostResult) -> dict[str, Any]:
    return {"model": str(result.model_dir), "steps": result.steps, "final_loss": result.final_loss,
            "figures": result.figures, "metrics": str(result.run_dir / "metrics.jsonl")}


def with_safety(source: Path, extra: list[dict[str, Any]], out: Path) -> Path:
    """`out`: the records of `source` followed by `extra` (the SFT and DPO loaders shuffle)."""
    with atomic_open(out) as f:
        f.write(source.read_text(encoding="utf-8"))
        f.writelines(json.dumps(r) + "\n" for r in extra)
    return out


def sft_stage(ctx: RunContext, out: Path, s: SFTSettings) -> dict[str, Any]:
    """SFT round 1 on the corpus's dialogs plus `safety_dialogs` safety dialogs and `tool_dialogs` tool-use dialogs
    (RUN/NN-sft/sft_data.jsonl)."""
    from herd.post import SFTConfig, sft

    corpus = ctx.stage_dir("corpus")
    extra = safety_dialogs(s.safety_dialogs, ctx.seed) + corpus_tool_dialogs(corpus, s.tool_dialogs, ctx.seed)
    extra += math_dialogs(s.math_dialogs, ctx.seed, held_out_questions(corpus))
    data = with_safety(corpus / "post" / "sft.jsonl", extra, out / "sft_data.jsonl")
    config = SFTConfig(**stage_fields(ctx, out, s, ctx.outputs("anneal")["model"]),
                       data=str(data), val_data=str(corpus / "post" / "sft_val.jsonl"))
    return {**_outputs(sft(config)), "data": str(data), "safety_dialogs": s.safety_dialogs,
            "tool_dialogs": s.tool_dialogs}


def math_dialogs(n: int, seed: int, held_out: set[str]) -> list[dict[str, Any]]:
    """`n` math dialogs as the corpus draws them (herd.corpus.chat.sft_dialog: three word problems to one bare sum),
    none asking a `held_out` question."""
    from herd.corpus.math import addition_question, make_problem

    rng, out = random.Random(seed + 7), []
    while len(out) < n:
        bare = rng.random() < 0.25
        p = addition_question(rng.randint(10, 99), rng.randint(10, 99)) if bare else make_problem(rng)
        if p.question not in held_out:
            out.append({"messages": [{"role": "user", "content": p.question},
                                     {"role": "assistant", "content": p.solution}], "domain": "math"})
    return out


def corpus_tool_dialogs(corpus: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` tool-use dialogs that ask none of the corpus's held-out math and addition questions; the dialogs
    offered the tool without needing it are the corpus's non-math SFT dialogs."""
    direct = [d for d in map(json.loads, (corpus / "post" / "sft.jsonl").read_text(encoding="utf-8").splitlines())
              if d.get("domain") != "math"]
    return tool_dialogs(n, seed, held_out_questions(corpus), direct)


def held_out_questions(corpus: Path) -> set[str]:
    """The corpus's held-out math and addition questions (eval/*.jsonl), which no training data asks."""
    return {json.loads(line)["question"] for name in ("math", "addition")
            for line in (corpus / "eval" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()}


def preference_data(ctx: RunContext, out: Path, s: PrefSettings, extra: list[dict[str, Any]] | None = None,
                    wrapped_share: float = 0.0) -> Path:
    """The corpus's preference pairs plus `safety_pairs` safety pairs (a share `wrapped_share` in adversarial
    wrappers) and `extra` records (RUN/NN-stage/prefs.jsonl)."""
    return with_safety(ctx.stage_dir("corpus") / "post" / "prefs.jsonl",
                       safety_pairs(s.safety_pairs, ctx.seed, s.safety_benign_share, wrapped_share) + (extra or []),
                       out / "prefs.jsonl")


def rm_stage(ctx: RunContext, out: Path, s: PrefSettings) -> dict[str, Any]:
    """The reward model from the SFT model; "held_out": its held-out pair accuracy per kind (`held_out_accuracy`)."""
    from herd.post import RewardConfig, train_reward_model

    post = ctx.stage_dir("corpus") / "post"
    config = RewardConfig(**stage_fields(ctx, out, s, ctx.outputs("sft")["model"]),
                          data=str(preference_data(ctx, out, s)), val_data=str(post / "prefs_val.jsonl"))
    result = train_reward_model(config)
    pairs = {"corpus": post / "prefs_val.jsonl"}
    for kind, records in held_out_pairs(ctx.config.eval.refusal_prompts, ctx.seed).items():
        with atomic_open(out / f"held_out_{kind}.jsonl") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        pairs[kind] = out / f"held_out_{kind}.jsonl"
    return {**_outputs(result), "held_out": held_out_accuracy(result.model_dir, pairs, s.seq_len, ctx.device)}


def held_out_accuracy(model_dir: Path, pairs: dict[str, Path], seq_len: int, device: str) -> dict[str, float]:
    """The reward model's pair accuracy (share of pairs it orders right; chance 0.5) on each kind of held-out pairs:
    the corpus's (math and knowledge) and the eval's held-out harmful and benign requests
    (safety_data.held_out_pairs)."""
    from herd.post import load_reward_model
    from herd.post.batches import encode_pairs
    from herd.post.data import read_preferences
    from herd.post.reward_model import pair_accuracy

    rm, tok = load_reward_model(model_dir, device)
    return {kind: pair_accuracy(rm, encode_pairs(tok, read_preferences(path), seq_len), 16, tok.eos_id,
                                device)["val_accuracy"] for kind, path in pairs.items()}


def rejection_stage(ctx: RunContext, out: Path, s: RejectionSettings) -> dict[str, Any]:
    from herd.post import RejectionSamplingConfig, rejection_sample

    config = RejectionSamplingConfig(
        out_dir=str(out), policy=ctx.outputs("sft")["model"], reward_model=ctx.outputs("rm")["model"],
        prompts=str(ctx.stage_dir("corpus") / "post" / "prompts.jsonl"), seed=ctx.seed, device=ctx.device,
        samples_per_prompt=s.samples_per_prompt, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
        batch_size=32, progress=ctx.progress,
    )
    done = rejection_sample(config)
    return {k: done[k] for k in ("prompts", "samples", "mean_sample_reward", "mean_kept_reward", "output")}


def sft2_stage(ctx: RunContext, out: Path, s: SFT2Settings) -> dict[str, Any]:
    """SFT round 2: the rejection-sampled best replies (each repeated `rs_repeats` times) plus the round-1 dialogs
    (safety dialogs included)."""
    from herd.post import SFTConfig, sft

    post = ctx.stage_dir("corpus") / "post"
    kept = [json.loads(line) for line in Path(ctx.outputs("rejection")["output"]).read_text(encoding="utf-8").splitlines()]
    data = out / "sft_mix.jsonl"
    with atomic_open(data) as f:
        for _ in range(s.rs_repeats):
            f.writelines(json.dumps({"messages": r["messages"]}) + "\n" for r in kept)
        f.write(Path(ctx.outputs("sft")["data"]).read_text(encoding="utf-8"))
    config = SFTConfig(**stage_fields(ctx, out, s, ctx.outputs("sft")["model"]),
                       data=str(data), val_data=str(post / "sft_val.jsonl"))
    return {**_outputs(sft(config)), "rejection_dialogs": len(kept)}


def dpo_stage(ctx: RunContext, out: Path, s: DPOSettings) -> dict[str, Any]:
    """DPO from the round-2 model on the preference data plus on-policy pairs of its own replies
    (herd.speedrun.on_policy)."""
    from herd.post import DPOConfig, dpo

    corpus = ctx.stage_dir("corpus")
    tools = tool_pairs(s.tool_pairs, ctx.seed, held_out_questions(corpus))
    on_policy, figures = dpo_on_policy_pairs(ctx, s)
    config = DPOConfig(**stage_fields(ctx, out, s, ctx.outputs("sft2")["model"]), beta=s.beta,
                       data=str(preference_data(ctx, out, s, tools + on_policy, s.safety_wrapped_share)),
                       val_data=str(corpus / "post" / "prefs_val.jsonl"))
    return {**_outputs(dpo(config)), "tool_pairs": s.tool_pairs, "on_policy": figures}
