"""Rollouts for RL post-training (PPO, GRPO): G sampled completions per prompt from the current policy, their
per-token log-probs under the policy and the frozen reference, rewards and the KL penalty; `train_rl` serves
them to the shared training loop (`herd.post.stage.train_stage`) as minibatches, several epochs over each rollout.

Layout: a rollout is N right-padded rows of prompt + completion ids [N, T]; every per-token tensor is [N, T-1],
aligned with the next-token targets, and `mask` marks the targets that are completion tokens (the sampled
tokens and the end of turn when the policy stopped).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from herd.errors import HerdError
from herd.generation import generate_tokens
from herd.model import Transformer
from herd.post.batches import Batches
from herd.post.data import read_prompts
from herd.post.logps import Model, token_logps
from herd.post.rewards import Prompt, Scorer, arithmetic_questions, encode_prompts, make_scorer
from herd.model.tensor_parallel import TensorParallel
from herd.post.stage import PostResult, ReferenceConfig, join_ranks, load_start, reference_model, train_stage
from herd.tokenizer import Tokenizer
from herd.train.losses import Batch, LossFn
from herd.train.optimizer import autocast_dtype_for
from herd.train.packing import IGNORE_INDEX

KLEstimator = Literal["k1", "k3"]


@dataclass
class RLConfig(ReferenceConfig):
    """What PPO and GRPO share: prompts, the reward, sampling, epochs over each rollout, clipping and the KL.

    `steps` counts optimizer steps: each rollout of prompts_per_rollout x group_size sequences gives
    epochs x sequences / (batch_size x grad_accum) of them. `batch_size` is sequences per micro-batch, also per
    generation and scoring chunk; `seq_len` bounds prompt + completion.
    """

    prompts: str = ""
    """Prompts: JSONL of {"prompt": ...} or {"messages": [...]}; empty with reward=arithmetic: `questions`
    generated "What is A + B?" prompts."""
    val_prompts: str | None = None
    """Held-out prompts; the mean reward of greedy completions of them is reported as val_reward."""
    reward: str = "model"
    """model: `reward_model` scores prompt + completion; arithmetic: 1 when the completion's final answer (as the
    evals read it: "#### N", else its last number) is A + B of its "What is A + B?" prompt, else 0; package.module:function: any f(prompt_text, completion_text) -> float."""
    reward_model: str = ""
    """The reward model directory written by `herd rm` (its model/ folder), for reward=model."""
    questions: int = 1024
    """Generated arithmetic prompts (reward=arithmetic with no prompts file)."""
    group_size: int = 1
    """Completions sampled per prompt in a rollout."""
    prompts_per_rollout: int = 8
    """Prompts per rollout."""
    max_new_tokens: int = 128
    """Longest completion."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    top_p: float = 1.0
    """Nucleus sampling mass of the rollouts."""
    epochs: int = 1
    """Passes over each rollout, in shuffled minibatches of batch_size, before sampling the next."""
    clip_eps: float = 0.2
    """The policy ratio is clipped to [1 - clip_eps, 1 + clip_eps]."""
    kl_coef: float = 0.05
    """Weight of the per-token KL to the reference."""
    kl_estimator: KLEstimator = "k1"
    """k1: log pi - log ref (unbiased, can be negative); k3: exp(ref - pi) - (ref - pi) - 1 (unbiased, >= 0, lower
    variance); both estimate KL(pi || ref) from the sampled tokens."""
    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("questions", "group_size", "prompts_per_rollout", "max_new_tokens", "epochs"):
            if getattr(self, name) < 1:
                raise HerdError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise HerdError(f"temperature must be positive (rollouts are sampled), got {self.temperature}")
        if not 0 < self.clip_eps < 1:
            raise HerdError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.kl_coef < 0:
            raise HerdError(f"kl_coef must be 0 or more, got {self.kl_coef}")
        if self.faults.spike_factor:
            raise HerdError("faults.spike_factor must be 0 for RL stages: their losses change sign, so a running "
                            "mean does not measure spikes")
        if self.reward == "model" and not self.reward_model:
            raise HerdError("reward=model needs reward_model=<directory of `herd rm`>; or set reward=arithmetic "
                            "or reward=package.module:function")
        if not self.prompts and self.reward != "arithmetic":
            raise HerdError("prompts is empty; set prompts=<JSONL of prompts> (only reward=arithmetic generates them)")
        if self.max_new_tokens >= self.seq_len:
            raise HerdError(f"max_new_tokens ({self.max_new_tokens}) leaves no room for a prompt in seq_len "
                            f"({self.seq_len}); raise seq_len or lower max_new_tokens")
        sequences, step = self.prompts_per_rollout * self.group_size, self.batch_size * self.grad_accum
        if sequences % step:
            raise HerdError(f"a rollout's {sequences} sequences (prompts_per_rollout x group_size) must split into "
                            f"optimizer steps of batch_size x grad_accum = {step}; change one of them")


@dataclass
class Rollout:
    """Sampled completions of prompts with what the losses need about them."""

    tokens: torch.Tensor
    """Prompt + completion ids [N, T], right-padded."""
    mask: torch.Tensor
    """[N, T-1] bool: the target is a completion token."""
    logps: torch.Tensor
    """Log-probs of the targets under the policy that sampled them [N, T-1] (0 off the mask)."""
    ref_logps: torch.Tensor
    """Log-probs of the targets under the reference [N, T-1] (0 off the mask)."""
    scores: torch.Tensor
    """The reward of each sequence [N]."""


def completion_targets(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [N, T-1], targets [N, T-1]) of rollout rows, targets IGNORE_INDEX off the completion."""
    return tokens[:, :-1], torch.where(mask, tokens[:, 1:], IGNORE_INDEX)


@torch.no_grad()
def completion_logps(model: Model, tokens: torch.Tensor, mask: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Log-probs [N, T-1] of the completion tokens under `model` (0 off the mask), in chunks of batch_size rows."""
    chunks = [token_logps(model, *completion_targets(tokens[i : i + batch_size], mask[i : i + batch_size]))
              for i in range(0, tokens.shape[0], batch_size)]
    return torch.cat(chunks)


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of tokens sampled from the policy.

    k1 = log pi - log ref is unbiased but noisy and can be negative; k3 = r - log r - 1 with r = ref / pi is
    unbiased, never negative and of lower variance (Schulman, "Approximating KL divergence", 2020). Both are 0
    where policy and reference agree.
    """
    log_ratio = ref_logps - logps
    return -log_ratio if estimator == "k1" else torch.expm1(log_ratio) - log_ratio


def right_pad(rows: Sequence[list[int]], starts: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [N, T], completion mask [N, T-1]) of rows whose completion begins at `starts`."""
    tokens = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
    mask = torch.zeros(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool)
    for r, (row, start) in enumerate(zip(rows, starts, strict=True)):
        tokens[r, : len(row)] = torch.tensor(row)
        mask[r, start - 1 : len(row) - 1] = True
    return tokens, mask


def sample_rollout(
    policy: Transformer, reference: Model, prompts: Sequence[Prompt], scorer: Scorer, config: RLConfig,
    tok: Tokenizer, seed: int, autocast: contextlib.AbstractContextManager | None = None,
) -> Rollout:
    """Sample one completion of each prompt (repeat a prompt for a group), score it and compute the policy's and
    the reference's log-probs by a forward pass. A completion that stopped ends with the end-of-turn id, whichever
    stop id the policy sampled, so the policy learns where to stop in the chat format."""
    completions: list[list[int]] = []
    rows: list[list[int]] = []
    for start in range(0, len(prompts), config.batch_size):
        chunk = prompts[start : start + config.batch_size]
        results = generate_tokens(policy, [p.ids for p in chunk], max_new_tokens=config.max_new_tokens,
                                  temperature=config.temperature, top_p=config.top_p, seed=seed + start,
                                  stop_ids=tok.stop_ids)
        for prompt, result in zip(chunk, results, strict=True):
            completions.append(result.tokens)
            rows.append(prompt.ids + result.tokens + ([tok.eot_id] if result.finish_reason == "stop" else []))
    scores = torch.tensor(scorer(prompts, completions), dtype=torch.float32)
    tokens, mask = right_pad(rows, [len(p.ids) for p in prompts], tok.eos_id)
    device = policy.tok_embeddings.weight.device
    with autocast or contextlib.nullcontext():
        logps = completion_logps(policy, tokens.to(device), mask.to(device), config.batch_size).cpu()
        ref_logps = completion_logps(reference, tokens.to(device), mask.to(device), config.batch_size).cpu()
    return Rollout(tokens, mask, logps, ref_logps, scores)


class RolloutStream:
    """The loop's data for RL: `collect(prompt_indices, rollout_index)` samples a rollout and returns its per-sequence
    tensors, served `epochs` times in shuffled minibatches of `batch_size`; then the next rollout is sampled.

    The state (prompt order, rollouts taken, the current rollout's tensors and position) goes into every
    checkpoint, so a resumed run continues the same rollout with the same minibatches.
    """

    def __init__(self, collect: Callable[[list[int], int], Batch], n_prompts: int, config: RLConfig) -> None:
        self.collect, self.config = collect, config
        self.prompt_order = Batches(n_prompts, config.prompts_per_rollout, config.seed, list)
        self.rollouts, self.buffer, self.minibatches = 0, None, None

    def __iter__(self) -> RolloutStream:
        return self

    def __next__(self) -> Batch:
        config = self.config
        size = config.prompts_per_rollout * config.group_size
        if self.minibatches is None or self.minibatches.drawn == config.epochs * size:
            self.buffer = tuple(self.collect(next(self.prompt_order), self.rollouts))
            self.rollouts += 1
            self.minibatches = self._minibatches(0)
        return next(self.minibatches)

    def _minibatches(self, drawn: int) -> Batches:
        seed = int(np.random.SeedSequence([self.config.seed, self.rollouts]).generate_state(1)[0])
        minibatches = Batches(self.buffer[0].shape[0], self.config.batch_size, seed,
                              lambda rows: tuple(t[torch.as_tensor(rows)] for t in self.buffer))
        minibatches.drawn = drawn
        return minibatches

    def state_dict(self) -> dict:
        return {"prompts": self.prompt_order.state_dict(), "rollouts": self.rollouts, "buffer": list(self.buffer or ()),
                "drawn": self.minibatches.drawn if self.minibatches else 0}

    def load_state_dict(self, state: dict) -> None:
        self.prompt_order.load_state_dict(state["prompts"])
        self.rollouts = int(state["rollouts"])
        self.buffer = tuple(state["buffer"]) or None
        self.minibatches = self._minibatches(int(state["drawn"])) if self.buffer else None


@dataclass
class RLRun:
    """What an RL stage starts from: the policy (fine-tuned), the frozen reference, prompts and the reward."""

    policy: Transformer
    reference: Model
    """The frozen starting model (with LoRA, the policy with its adapters off)."""
    tok: Tokenizer
    device: torch.device
    prompts: list[Prompt]
    val_prompts: list[Prompt] | None
    scorer: Scorer
    group: TensorParallel | None = None
    """This rank's place when the frozen models are split over tp ranks."""

    def autocast(self, config: RLConfig) -> contextlib.AbstractContextManager:
        dtype = autocast_dtype_for(config.dtype, self.device)
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def rollout(self, config: RLConfig, prompt_indices: list[int], index: int) -> Rollout:
        """Rollout `index`: group_size completions of each prompt, seeded by (seed, index)."""
        prompts = [self.prompts[i] for i in prompt_indices for _ in range(config.group_size)]
        seed = int(np.random.SeedSequence([config.seed, index, 1]).generate_state(1)[0])
        return sample_rollout(self.policy, self.reference, prompts, self.scorer, config, self.tok, seed,
                              self.autocast(config))


def start_rl(config: RLConfig) -> RLRun:
    """Load the policy (with LoRA when configured), the frozen reference, the prompts and the reward."""
    group = join_ranks(config)
    policy, tok, device = load_start(config)
    reference = reference_model(config, policy, device, group)
    if config.prompts:
        dialogs = read_prompts(config.prompts)
    else:
        dialogs = arithmetic_questions(config.questions, config.seed)
    prompts = _fitted(encode_prompts(tok, dialogs), config)
    val = _fitted(encode_prompts(tok, read_prompts(config.val_prompts)), config) if config.val_prompts else None
    scorer = make_scorer(config.reward, config.reward_model, tok, device, config.batch_size, group)
    return RLRun(policy, reference, tok, device, prompts, val, scorer, group)


def _fitted(prompts: list[Prompt], config: RLConfig) -> list[Prompt]:
    room = config.seq_len - config.max_new_tokens
    for i, prompt in enumerate(prompts):
        if len(prompt.ids) > room:
            raise HerdError(f"prompt {i} has {len(prompt.ids)} tokens, over seq_len - max_new_tokens = {room}; "
                            "raise seq_len, lower max_new_tokens or shorten the prompt")
    return prompts


@torch.no_grad()
def mean_reward(run: RLRun, prompts: Sequence[Prompt], config: RLConfig) -> float:
    """Mean reward of the policy's greedy completions of `prompts`."""
    completions = []
    for start in range(0, len(prompts), config.batch_size):
        chunk = prompts[start : start + config.batch_size]
        results = generate_tokens(run.policy, [p.ids for p in chunk], max_new_tokens=config.max_new_tokens,
                                  stop_ids=run.tok.stop_ids)
        completions += [r.tokens for r in results]
    return float(np.mean(run.scorer(prompts, completions)))


def train_rl(
    config: RLConfig, stage: str, run: RLRun, model: nn.Module, loss_fn: LossFn,
    prepare: Callable[[Rollout], Batch], export: Callable[[Path], Path],
) -> PostResult:
    """Train `model` (the policy, or a module holding it) with `loss_fn` on rollouts that `prepare` turns into
    per-sequence tensors (the algorithm's advantages), through the shared loop and run directory."""
    data = RolloutStream(lambda indices, index: prepare(run.rollout(config, indices, index)), len(run.prompts), config)
    evaluate = partial(val_figures, run, config) if run.val_prompts else None
    return train_stage(config, stage, model, loss_fn, data, run.device, evaluate=evaluate, export=export,
                       counts={"prompts": len(run.prompts)}, group=run.group)


def val_figures(run: RLRun, config: RLConfig) -> dict[str, float]:
    """The held-out figures: val_reward, the mean reward of greedy completions of the val prompts."""
    return {"val_reward": mean_reward(run, run.val_prompts, config)}


def sum_metrics(mask: torch.Tensor, scores: torch.Tensor, **per_token: torch.Tensor) -> dict[str, float]:
    """A micro-batch's figures summed, as the loop logs them: sequences, reward_sum, completion_tokens and the
    sum over completion tokens of each `per_token` tensor (name_sum); divide by sequences or completion_tokens."""
    m = mask.float()
    return {"sequences": float(scores.shape[0]), "reward_sum": float(scores.sum()), "completion_tokens": float(m.sum()),
            **{f"{name}_sum": float((value.detach() * m).sum()) for name, value in per_token.items()}}
