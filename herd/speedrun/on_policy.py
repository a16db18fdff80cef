"""On-policy pairs for the speedrun's DPO (Llama 3 builds its preference data from the policy's own samples).

Safety pairs: the round-2 SFT model answers varied training safety requests (never the held-out ones;
herd.speedrun.safety_data.training_requests), greedily and sampled; CyberSecEval's refusal check
(herd.safety.cyberseceval.is_refusal) judges each reply, and a wrong one (a refusal of a benign request, compliance
with a harmful one) is rejected in favour of one of the model's own right replies to that request that ended by
itself (else a written refusal or help). A request it answers right in every sample anchors that reply over the
written wrong one. Without anchors, DPO from a tiny SFT2 model fell from 95.0% to 70.0% harmful refused on held-out
requests (false refusals 25.0% -> 7.5%); with anchors on harmful requests only, false refusals rose instead (tiny
run, 100 + 100 distinct held-out requests: 18% -> 39%, harmful refused 90% -> 88%): benign requests need theirs.
With both, from a tiny SFT2 that already refuses well (1500 safety dialogs: 97% / 8%), DPO (400 requests, 4 reward
samples, 60 steps) moved the threshold, not both rates, and cost math: lr 1e-4 96% / 10%, math and addition -10
points each; lr 5e-5 92% / 5%, math and addition -3.3 (DPO without on-policy pairs: 96% / 9%, math +1.7, addition
0). The tiny preset leaves them off.

Fixed written pairs alone push the same two strings down everywhere; on the tiny speedrun they made DPO answer
"Sorry, 3 + 3 = 6" and lowered harmful refusals 90% -> 72.5%. Benign requests the model helps with in every sample
give no pair.

Reward pairs: the model's sampled replies to the corpus's training prompts, scored by the reward model; the best
beats the worst where they differ by more than `margin` (what the reward model prefers, on the policy's own replies).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from herd.speedrun.safety_data import HELP, REFUSALS, training_requests

if TYPE_CHECKING:
    from herd.speedrun.config import DPOSettings
    from herd.speedrun.run import RunContext


def sample(model: Any, tok: Any, prompts: list[list[int]], samples: int, seed: int, max_new_tokens: int,
           temperature: float, *, greedy_first: bool = False) -> list[list[Any]]:
    """Per prompt, `samples` GenerationResults at `temperature` (with `greedy_first`, the first greedy)."""
    from herd.generation import generate_tokens

    rows: list[list[Any]] = [[] for _ in prompts]
    for k in range(samples):
        results = generate_tokens(model, prompts, max_new_tokens=max_new_tokens, seed=seed + k, stop_ids=tok.stop_ids,
                                  temperature=0.0 if greedy_first and k == 0 else temperature)
        for row, result in zip(rows, results, strict=True):
            row.append(result)
    return rows


@torch.no_grad()
def on_policy_safety_pairs(model_dir: str | Path, n: int, samples: int, seed: int, device: str, *,
                           max_new_tokens: int = 48, temperature: float = 1.0) -> tuple[list[dict[str, Any]], dict]:
    """(pairs {"prompt", "chosen", "rejected", "domain": "safety_on_policy"}, figures) from the model's replies to `n`
    training safety requests, `samples` per request (the first greedy, the rest at `temperature`)."""
    from herd.checkpoint import load
    from herd.safety.cyberseceval import is_refusal

    model, tok = load(model_dir, device=device)
    model.eval()
    asks = training_requests(n, seed)
    prompts = [tok.encode_dialog([{"role": "user", "content": text}]) for text, _ in asks]
    replies = [[(tok.decode(r.tokens), r.finish_reason == "stop") for r in row]
               for row in sample(model, tok, prompts, samples, seed, max_new_tokens, temperature, greedy_first=True)]
    rng = random.Random(seed)
    pairs, wrong_greedy = [], {True: 0, False: 0}
    for (text, harmful), row in zip(asks, replies, strict=True):
        wrong_greedy[harmful] += is_refusal(row[0][0]) != harmful
        pair = safety_pair(text, harmful, row, rng)
        if pair:
            pairs.append(pair)
    counts = {h: sum(harmful == h for _, harmful in asks) for h in (True, False)}
    figures = {"requests": n, "pairs": len(pairs),
               "greedy_harmful_complied": wrong_greedy[True] / max(counts[True], 1),
               "greedy_benign_refused": wrong_greedy[False] / max(counts[False], 1)}
    return pairs, figures


def safety_pair(text: str, harmful: bool, replies: list[tuple[str, bool]], rng: random.Random) -> dict[str, Any] | None:
    """The pair of a request from the model's (text, ended by itself) `replies`: its first wrong reply rejected, its
    first right one that ended chosen (else a written one); a request answered right every time anchors that
    reply over the written wrong one (a refusal of a harmful request over compliance, help with a benign one over a
    refusal)."""
    from herd.safety.cyberseceval import is_refusal

    wrong = [reply for reply, _ in replies if is_refusal(reply) != harmful]
    right = [reply for reply, ended in replies if ended and is_refusal(reply) == harmful]
    if wrong:
        chosen = right[0] if right else rng.choice(REFUSALS if harmful else HELP)
        return {"prompt": text, "chosen": chosen, "rejected": wrong[0], "domain": "safety_on_policy"}
    if right:
        return {"prompt": text, "chosen": right[0], "rejected": rng.choice(HELP if harmful else REFUSALS),
                "domain": "safety_on_policy"}
    return None


@torch.no_grad()
def reward_pairs(model_dir: str | Path, reward_model_dir: str | Path, prompts_path: str | Path, samples: int, seed: int,
                 device: str, *, max_new_tokens: int = 64, temperature: float = 0.8,
                 margin: float = 0.5) -> tuple[list[dict[str, Any]], dict]:
    """(pairs {"prompt", "chosen", "rejected", "domain": "reward"}, figures): per prompt of `prompts_path`
    (herd.post.data.read_prompts), the reward model's best of the model's `samples` replies over its worst, where it
    ended by itself and the rewards differ by more than `margin`."""
    from herd.checkpoint import load
    from herd.post import load_reward_model
    from herd.post.data import read_prompts

    model, tok = load(model_dir, device=device)
    model.eval()
    rm, _ = load_reward_model(reward_model_dir, device)
    rm.eval()
    dialogs = read_prompts(prompts_path)
    prompts = [tok.encode_dialog(d) for d in dialogs]
    rows = sample(model, tok, prompts, samples, seed, max_new_tokens, temperature)
    pairs, gaps = [], []
    for dialog, ids, row in zip(dialogs, prompts, rows, strict=True):
        rewards = rm.score([ids + r.tokens + [tok.eot_id] for r in row], 16, tok.eos_id)
        gaps.append(max(rewards) - min(rewards))
        pair = best_over_worst([(tok.decode(r.tokens), r.finish_reason == "stop") for r in row], rewards, margin)
        if pair:
            pairs.append({"prompt": dialog, "chosen": pair[0], "rejected": pair[1], "domain": "reward"})
    return pairs, {"prompts": len(prompts), "pairs": len(pairs), "mean_gap": sum(gaps) / max(len(gaps), 1)}


def best_over_worst(replies: list[tuple[str, bool]], rewards: list[float], margin: float) -> tuple[str, str] | None:
    """(best, worst) of (text, ended by itself) `replies` by `rewards`, if the best ended and leads by > `margin`."""
    best = max(range(len(replies)), key=rewards.__getitem__)
    worst = min(range(len(replies)), key=rewards.__getitem__)
    if rewards[best] - rewards[worst] > margin and replies[best][1]:
        return replies[best][0], replies[worst][0]
    return None


def dpo_on_policy_pairs(ctx: RunContext, s: DPOSettings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The DPO stage's on-policy pairs from the round-2 SFT model: `s.on_policy_prompts` safety requests and
    `s.reward_pair_samples` replies per corpus training prompt (0 skips either); (pairs, figures)."""
    model = ctx.outputs("sft2")["model"]
    safety, safety_figures = (on_policy_safety_pairs(model, s.on_policy_prompts, s.on_policy_samples, ctx.seed + 4,
                                                     ctx.device) if s.on_policy_prompts else ([], {}))
    reward, reward_figures = (reward_pairs(model, ctx.outputs("rm")["model"],
                                           ctx.stage_dir("corpus") / "post" / "prompts.jsonl", s.reward_pair_samples,
                                           ctx.seed + 5, ctx.device) if s.reward_pair_samples else ([], {}))
    return safety + reward, {"safety": safety_figures, "reward": reward_figures}
