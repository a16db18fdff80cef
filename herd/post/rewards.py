"""Rewards for RL post-training: a trained reward model, or a verifiable function of (prompt, completion) text
such as the built-in arithmetic check; `make_scorer` turns either into one batched scorer of rollouts."""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from herd.errors import HerdError
from herd.eval.metrics import exact_match, final_answer, normalize_number
from herd.model.tensor_parallel import TensorParallel, parallelize
from herd.post.reward_model import load_reward_model
from herd.tokenizer import Message, Tokenizer

RewardFn = Callable[[str, str], float]
"""A verifiable reward: f(prompt_text, completion_text) -> float (the prompt's last user message)."""

QUESTION = re.compile(r"what is\s+(-?\d+)\s*\+\s*(-?\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Prompt:
    """A prompt as the rollouts use it: its text (the last user message) and its chat-format ids."""

    text: str
    ids: list[int]
    """The dialog encoded up to and with the assistant header."""


Scorer = Callable[[Sequence[Prompt], Sequence[list[int]]], list[float]]
"""Rewards of completions (token ids without the end of turn) of their prompts, one per completion."""


def encode_prompts(tok: Tokenizer, dialogs: Sequence[Sequence[Message]]) -> list[Prompt]:
    return [Prompt(next(m["content"] for m in reversed(d) if m["role"] == "user"), tok.encode_dialog(d)) for d in dialogs]


def arithmetic_questions(n: int, seed: int, max_operand: int = 99) -> list[list[Message]]:
    """`n` one-turn dialogs "What is A + B?" with A, B drawn uniformly from 0..max_operand."""
    rng = random.Random(seed)
    return [[{"role": "user", "content": f"What is {rng.randint(0, max_operand)} + {rng.randint(0, max_operand)}?"}]
            for _ in range(n)]


def arithmetic_reward(prompt: str, completion: str) -> float:
    """1.0 when the completion's final answer (read as the evals read it: "#### N", "The answer is N", "\\boxed{N}",
    else its last number) equals A + B of the prompt's "What is A + B?", else 0.0."""
    question = QUESTION.search(prompt)
    if question is None:
        raise HerdError(f"reward=arithmetic needs prompts of the form 'What is A + B?', got {prompt!r:.80}")
    return exact_match(final_answer(completion), str(int(question[1]) + int(question[2])), normalize_number)


def reward_function(spec: str) -> RewardFn:
    """The reward `spec` names: "arithmetic" or "package.module:function"."""
    if spec == "arithmetic":
        return arithmetic_reward
    module, _, name = spec.partition(":")
    if not (module and name):
        raise HerdError(f"reward={spec!r} is not model, arithmetic, or package.module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise HerdError(f"reward={spec!r} cannot be loaded ({e}); check the module is importable and names {name}") from None
    if not callable(fn):
        raise HerdError(f"reward={spec!r} is not a function")
    return fn


def make_scorer(
    spec: str, reward_model: str, tok: Tokenizer, device: torch.device, batch_size: int,
    group: TensorParallel | None = None,
) -> Scorer:
    """Scorer of `spec`: "model" scores prompt + completion + end of turn with the reward model in `reward_model`
    (as rejection sampling does; under `group` split over its ranks); anything else is a verifiable
    `reward_function` of the decoded completion."""
    if spec == "model":
        model, _ = load_reward_model(reward_model, device)
        if group is not None:  # the reward model's own format, read whole, then cut
            parallelize(model.backbone, group)

        def by_model(prompts: Sequence[Prompt], completions: Sequence[list[int]]) -> list[float]:
            sequences = [p.ids + c + [tok.eot_id] for p, c in zip(prompts, completions, strict=True)]
            return model.score(sequences, batch_size, tok.eos_id)

        return by_model
    fn = reward_function(spec)

    def by_function(prompts: Sequence[Prompt], completions: Sequence[list[int]]) -> list[float]:
        return [float(fn(p.text, tok.decode(c))) for p, c in zip(prompts, completions, strict=True)]

    return by_function
