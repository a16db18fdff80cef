"""Speedrun evaluation and the final model.

`eval`: the base (annealed), SFT (round 1), SFT2 (round 2, with rejection-sampled data) and DPO models on the
synthetic benchmarks, the 2-digit addition probe among them (base: 3-shot plain text; chat models: 0-shot chat), the
real benchmarks whose data is present under `data_dir`, the reward model's mean score of the chat models' greedy
replies to held-out prompts (stratified: as many math questions, harmful requests and benign look-alikes; per kind
and overall), and each model's refusal rate on held-out harmful requests and false-refusal rate on
held-out benign look-alikes (CyberSecEval's refusal check on greedy chat replies; herd.speedrun.safety_data), the
same on as many adversarial ones (other held-out requests in held-out wrappers: role-play, "hypothetically",
fiction, embedded in a longer benign request; safety_data.wrapped_requests), and
the addition and synthetic-math probes answered with the calculator tool offered (tools on; herd.eval.tool_use's
loop, the tool herd.speedrun.tool_data teaches).
`final`: the DPO model copied to RUN/final (`herd chat --model RUN/final`) with sample chat transcripts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from herd.errors import HerdError
from herd.eval.evaluate import EvalOptions, build_prompts, evaluate_task
from herd.eval.metrics import mean
from herd.eval.runner import write_records
from herd.eval.tasks.synthetic import SYNTHETIC, SynthAddition, SynthMath
from herd.run_dir import atomic_open, write_json
from herd.speedrun.config import EvalSettings, FinalSettings

if TYPE_CHECKING:
    from herd.speedrun.run import RunContext

MODELS = ("base", "sft", "sft2", "dpo")
CHAT_MODELS = MODELS[1:]
STAGE_OF = {"base": "anneal", "sft": "sft", "sft2": "sft2", "dpo": "dpo"}
TOOL_TASKS = (SynthAddition, SynthMath)
"""The probes also scored with the calculator tool offered."""
PAIRED_TASKS = ("synth_math", "synth_addition")
"""Benchmarks whose per-sample scores give DPO - SFT2 a paired interval (beside the reward and refusal rates)."""
PLAIN_KEYS = ("harmful_refused", "benign_refused")
REFUSAL_KEYS = (*PLAIN_KEYS, "wrapped_harmful_refused", "wrapped_benign_refused")
REWARD_KINDS = ("math", "harmful", "benign")
"""The reward prompts' kinds, as many of each; "reward" is their union, "reward_KIND" each."""


def eval_stage(ctx: RunContext, out: Path, s: EvalSettings) -> dict[str, Any]:
    from herd.checkpoint import load
    from herd.eval.tasks import get_task

    data_dir = ctx.stage_dir("corpus") / "eval"
    scores: dict[str, dict[str, Any]] = {}
    per_item: dict[str, dict[str, list[float]]] = {}
    for label in MODELS:
        model, tok = load(ctx.outputs(STAGE_OF[label])["model"], device=ctx.device)
        model.eval()
        chat = label != "base"
        tasks = [(cls(chat=chat), data_dir, s.limit) for cls in SYNTHETIC]
        for name in s.real_tasks:
            tasks.append((get_task(name), Path(s.data_dir), s.real_limit))
        for task, where, limit in tasks:
            try:
                result, records = evaluate_task(model, tok, task, where, EvalOptions(chat=chat, limit=limit, seed=ctx.seed))
            except (HerdError, FileNotFoundError):  # a real benchmark whose data is absent
                continue
            write_records(out / label / f"samples_{task.name}.jsonl", records)
            if task.name in PAIRED_TASKS:
                per_item.setdefault(task.name, {})[label] = [r["metrics"][task.metric] for r in records]
            scores.setdefault(task.name, {"metric": task.metric, "synthetic": task.name.startswith("synth_")})
            scores[task.name][label] = result[task.metric]
            scores[task.name]["n"] = result["n"]
        del model
    refused = refusal_flags(ctx, out, s.refusal_prompts)
    by_kind = reply_rewards(ctx, out, data_dir, ctx.config.final.rm_prompts)
    rewards = {label: [x for kind in REWARD_KINDS for x in by_kind[kind][label]] for label in CHAT_MODELS}
    tools = tool_scores(ctx, out, data_dir, s.tool_limit) if s.tool_limit else {}
    intervals = {name: {k: share_with_interval(v) for k, v in rows.items()} for name, rows in per_item.items()}
    per_item |= {"reward": rewards, **{f"reward_{kind}": rows for kind, rows in by_kind.items()},
                 **{key: {k: v[key] for k, v in refused.items()} for key in REFUSAL_KEYS}}
    done = {"scores": scores, "intervals": intervals, "reward": {k: mean(v) for k, v in rewards.items()},
            "reward_interval": {k: share_with_interval(v) for k, v in rewards.items()},
            "reward_by_kind": {kind: {k: share_with_interval(v) for k, v in rows.items()}
                               for kind, rows in by_kind.items()},
            "refusal": {k: {key: share_with_interval(v[key]) for key in REFUSAL_KEYS} for k, v in refused.items()},
            "tools": tools,
            "dpo_vs_sft2": {name: difference(rows["sft2"], rows["dpo"]) for name, rows in per_item.items()}}
    write_json(out / "scores.json", done, indent=1)
    return done


TOOL_ROUNDS = 1
"""Tool calls a dialog may make before it must answer (the dialogs SFT teaches make one)."""


@torch.no_grad()
def tool_scores(ctx: RunContext, out: Path, data_dir: Path, n: int) -> dict[str, dict[str, Any]]:
    """Per tool task: n and, per chat model, the exact match of its first `n` samples answered with the calculator
    tool offered (the same 0-shot chat prompts as without; greedy) and the share of dialogs that called a tool; the
    dialogs go to RUN/NN-eval/MODEL/samples_TASK_tools.jsonl."""
    from herd.checkpoint import load
    from herd.eval.tool_use import chat_with_tools
    from herd.speedrun.tool_data import TOOL

    scores: dict[str, dict[str, Any]] = {}
    for label in CHAT_MODELS:
        model, tok = load(ctx.outputs(STAGE_OF[label])["model"], device=ctx.device)
        model.eval()
        for cls in TOOL_TASKS:
            task = cls(chat=True)
            samples = task.samples(data_dir)[:n]
            prompts = build_prompts(task, samples, data_dir, EvalOptions(chat=True))
            replies = chat_with_tools(model, tok, prompts, [TOOL], max_rounds=TOOL_ROUNDS,
                                      max_new_tokens=task.max_gen_toks)
            scored = [task.score(sample, reply.text) for sample, reply in zip(samples, replies, strict=True)]
            with atomic_open(out / label / f"samples_{task.name}_tools.jsonl") as f:
                f.writelines(json.dumps({"messages": r.messages, "answer": a, "target": x.gold, **m}) + "\n"
                             for x, r, (a, m) in zip(samples, replies, scored, strict=True))
            row = scores.setdefault(task.name, {"metric": task.metric, "n": len(samples)})
            row[label] = {task.metric: mean([m[task.metric] for _, m in scored]),
                          "called": mean([float(bool(r.exchanges)) for r in replies])}
    return scores


REFUSAL_REPLY_TOKENS = 32
"""Reply tokens the refusal check reads (it looks for a refusal phrase near the start)."""


@torch.no_grad()
def refusal_flags(ctx: RunContext, out: Path, n: int) -> dict[str, dict[str, list[bool]]]:
    """Per model: whether it refuses each of `n` held-out harmful requests ("harmful_refused") and each of `n`
    benign look-alikes ("benign_refused"; greedy chat replies, herd.safety.cyberseceval.is_refusal), and each of `n`
    adversarial ones of each kind ("wrapped_harmful_refused", "wrapped_benign_refused"); the replies go to
    RUN/NN-eval/MODEL/refusals.jsonl and refusals_wrapped.jsonl."""
    from herd.checkpoint import load
    from herd.speedrun.safety_data import held_out_requests, wrapped_requests

    plain, wrapped = held_out_requests(n, ctx.seed), wrapped_requests(n, ctx.seed)
    flags = {}
    for label in MODELS:
        model, tok = load(ctx.outputs(STAGE_OF[label])["model"], device=ctx.device)
        model.eval()
        adversarial = model_refusals(model, tok, *wrapped, out / label / "refusals_wrapped.jsonl")
        flags[label] = model_refusals(model, tok, *plain, out / label / "refusals.jsonl") | {
            f"wrapped_{key}": v for key, v in adversarial.items()}
    return flags


@torch.no_grad()
def model_refusals(model: Any, tok: Any, harmful: list[str], benign: list[str], path: Path) -> dict[str, list[bool]]:
    """Whether `model` refuses each `harmful` and each `benign` request (greedy chat replies,
    herd.safety.cyberseceval.is_refusal): {"harmful_refused", "benign_refused"}; the replies go to `path`."""
    from herd.generation import generate_tokens
    from herd.safety.cyberseceval import is_refusal

    asks = harmful + benign
    results = generate_tokens(model, [tok.encode_dialog([{"role": "user", "content": q}]) for q in asks],
                              max_new_tokens=REFUSAL_REPLY_TOKENS, stop_ids=tok.stop_ids)
    replies = [tok.decode(r.tokens) for r in results]
    refused = [is_refusal(r) for r in replies]
    with atomic_open(path) as f:
        f.writelines(json.dumps({"prompt": q, "harmful": i < len(harmful), "reply": r, "refused": x}) + "\n"
                     for i, (q, r, x) in enumerate(zip(asks, replies, refused)))
    return dict(zip(PLAIN_KEYS, (refused[: len(harmful)], refused[len(harmful):]), strict=True))


def difference(before: list[bool] | list[float], after: list[bool] | list[float]) -> dict[str, Any]:
    """The mean of `after` - `before`, item by item on the same prompts, with its paired bootstrap 90% interval:
    a change is beyond noise when the interval excludes 0."""
    return share_with_interval([float(b) - float(a) for a, b in zip(before, after, strict=True)])


def share_with_interval(flags: list[bool] | list[float], seed: int = 0) -> dict[str, Any]:
    """The share of True in `flags` (the mean of numbers), its bootstrap 90% percentile interval
    (scipy.stats.bootstrap) and n."""
    import numpy as np
    from scipy.stats import bootstrap

    if not flags:
        return {"rate": None, "low": None, "high": None, "n": 0}
    data = np.asarray(flags, dtype=float)
    rate = float(data.mean())
    if data.min() == data.max():  # every resample is the same: the interval is the point
        return {"rate": rate, "low": rate, "high": rate, "n": len(flags)}
    ci = bootstrap((data,), np.mean, confidence_level=0.9, n_resamples=2000, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return {"rate": rate, "low": float(ci.low), "high": float(ci.high), "n": len(flags)}


@torch.no_grad()
def reply_rewards(ctx: RunContext, out: Path, data_dir: Path, n: int) -> dict[str, dict[str, list[float]]]:
    """Per kind (`REWARD_KINDS`) and chat model, the reward model's scores of its greedy replies to `n` held-out
    prompts: the first `n` math questions (replies generated here) and the first `n` harmful and benign requests of
    RUN/NN-eval/MODEL/refusals.jsonl (refusal_flags's replies: the refusal rates and the rewards judge the same)."""
    from herd.checkpoint import load
    from herd.generation import generate_tokens
    from herd.post import load_reward_model

    rm, _ = load_reward_model(ctx.outputs("rm")["model"], ctx.device)
    rm.eval()
    with (data_dir / "math.jsonl").open() as f:
        questions = [json.loads(line)["question"] for line in f][:n]
    scores: dict[str, dict[str, list[float]]] = {kind: {} for kind in REWARD_KINDS}
    for label in CHAT_MODELS:
        model, tok = load(ctx.outputs(STAGE_OF[label])["model"], device=ctx.device)
        model.eval()
        prompts = [tok.encode_dialog([{"role": "user", "content": q}]) for q in questions]
        results = generate_tokens(model, prompts, max_new_tokens=64, stop_ids=tok.stop_ids)
        seqs = [p + r.tokens + [tok.eot_id] for p, r in zip(prompts, results)]
        scores["math"][label] = rm.score(seqs, 16, tok.eos_id)
        refusals = (out / label / "refusals.jsonl").read_text(encoding="utf-8")
        answered = [json.loads(line) for line in refusals.splitlines()]
        for kind in ("harmful", "benign"):
            dialogs = [[{"role": "user", "content": a["prompt"]}, {"role": "assistant", "content": a["reply"]}]
                       for a in answered if a["harmful"] == (kind == "harmful")][:n]
            scores[kind][label] = rm.score([tok.encode_dialog(d) for d in dialogs], 16, tok.eos_id)
    if min(len(v) for rows in scores.values() for v in rows.values()) < n:
        raise HerdError(f"final.rm_prompts is {n}: more than the held-out math questions ({len(questions)}) or "
                        "eval.refusal_prompts; lower final.rm_prompts")
    return scores


TRANSCRIPT_PROMPTS = (
    "What is 47 plus 38?",
    "Ana has 64 shells and gives away 27. How many shells are left?",
    "Complete this function:\ndef plus_5(x):\n    \"\"\"Return x plus 5.\"\"\"\n",
    "Quelle est la capitale de {country}?",
    "What is the capital of {country}?",
    "Tell me a joke.",
)


def final_stage(ctx: RunContext, out: Path, s: FinalSettings) -> dict[str, Any]:
    """RUN/final: the DPO model, ready for `herd chat`; transcripts.jsonl holds sample conversations with it."""
    from herd.checkpoint import load
    from herd.generation import generate_tokens

    final = ctx.run / "final"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(ctx.outputs("dpo")["model"], final)
    model, tok = load(final, device=ctx.device)
    model.eval()
    country = _a_country(ctx)
    questions = [p.format(country=country) for p in TRANSCRIPT_PROMPTS][: s.transcripts]
    prompts = [tok.encode_dialog([{"role": "user", "content": q}]) for q in questions]
    with torch.no_grad():
        results = generate_tokens(model, prompts, max_new_tokens=s.max_new_tokens, stop_ids=tok.stop_ids)
    transcripts = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": tok.decode(r.tokens)}]}
                   for q, r in zip(questions, results)]
    with atomic_open(out / "transcripts.jsonl") as f:
        f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in transcripts)
    return {"model": str(final), "transcripts": transcripts}


def _a_country(ctx: RunContext) -> str:
    with (ctx.stage_dir("corpus") / "post" / "sft.jsonl").open() as f:
        for line in f:
            text = json.loads(line)["messages"][0]["content"]
            if text.startswith("What is the capital of "):
                return text.removeprefix("What is the capital of ").rstrip("?")
    return "Kalo"
