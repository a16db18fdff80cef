"""The task abstraction shared by evaluation and SFT: a task turns its data into `Sample`s (a question,
its gold answer, choices), renders few-shot prompts (plain text or chat), and scores model outputs.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from herd.errors import HerdError
from herd.eval.metrics import multiple_choice
from herd.tokenizer import Message

Kind = Literal["multiple_choice", "generate"]


@dataclass(frozen=True)
class Sample:
    """One example of a task, independent of how it is prompted."""

    question: str
    """The example's prompt text (a user turn in chat mode), without few-shot examples."""
    answer: str
    """The gold completion: the target shown in few-shot examples and trained on in SFT."""
    choices: tuple[str, ...] = ()
    """Multiple choice: the continuations scored (without the target delimiter)."""
    gold: Any = None
    """Multiple choice: the index of the right choice; generation: the reference the scorer compares to."""
    group: str = ""
    """Subject or subtask: few-shot pools and macro averages are per group."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    """Anything else the scorer needs (HumanEval's tests and entry point, DROP's spans)."""


class Task(ABC):
    """A benchmark: where its data is, how a sample is prompted, how an output is scored."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    num_fewshot: ClassVar[int] = 0
    fewshot_sampling: ClassVar[Literal["first", "random"]] = "first"
    """"first": the first num_fewshot of the pool (fixed exemplars, MMLU's dev split); "random": seeded draw."""
    target_delimiter: ClassVar[str] = " "
    fewshot_delimiter: ClassVar[str] = "\n\n"
    stop: ClassVar[tuple[str, ...]] = ()
    """Generation: strings that end an output (plain mode; chat mode ends at the end of the turn)."""
    max_gen_toks: ClassVar[int] = 256
    chain_of_thought: ClassVar[bool] = False
    """Generation: the prompt asks for reasoning before the answer (shown as "CoT" in the results table)."""
    metric: ClassVar[str] = "acc"
    """The headline metric of the release's table."""
    average: ClassVar[Literal["micro", "macro"]] = "micro"
    """"macro": the headline is the mean over groups of each group's mean (MMLU)."""

    @abstractmethod
    def samples(self, data_dir: Path) -> list[Sample]:
        """The evaluation samples, in the release's order."""

    def fewshot_pool(self, data_dir: Path, group: str) -> list[Sample]:
        """Candidate few-shot examples for a group (default: none)."""
        return []

    def train_samples(self, data_dir: Path) -> list[Sample]:
        """The task's training split, for SFT (default: none)."""
        raise HerdError(f"{self.name} has no training split in herd; train on its few-shot pool (split fewshot) instead")

    def description(self, data_dir: Path, group: str) -> str:
        """Text before the few-shot examples (plain mode) or at the start of the first user turn (chat)."""
        return ""

    def score(self, sample: Sample, output: str) -> tuple[Any, dict[str, float]]:
        """Generation: (the answer extracted from `output`, metrics of this sample)."""
        raise NotImplementedError(f"{self.name} is a {self.kind} task")

    def score_choices(self, sample: Sample, logprobs: Sequence[float]) -> tuple[Any, dict[str, float]]:
        """Multiple choice: (the chosen index, acc / acc_norm / acc_bytes) from each choice's loglikelihood."""
        chosen = max(range(len(logprobs)), key=logprobs.__getitem__)
        return chosen, multiple_choice(logprobs, sample.choices, sample.gold)

    def conversation(self, sample: Sample) -> list[Message]:
        """The sample as a chat: the user's question and the assistant's gold answer (for SFT)."""
        return [{"role": "user", "content": sample.question}, {"role": "assistant", "content": sample.answer}]


def choose_fewshot(pool: Sequence[Sample], sample: Sample, k: int, *, how: str, seed: int, key: str) -> list[Sample]:
    """k examples from `pool`, never `sample` itself; "random" draws depend only on (seed, key), so a
    sample's prompt is the same whatever the limit, order or batch size."""
    candidates = [s for s in pool if s != sample]
    if how == "first":
        return candidates[:k]
    return random.Random(f"{seed}:{key}").sample(candidates, min(k, len(candidates)))


def render_plain(task: Task, sample: Sample, shots: Sequence[Sample], description: str = "") -> str:
    """description + each shot's question, delimiter, answer + the sample's question (no trailing space)."""
    parts = [shot.question + task.target_delimiter + shot.answer + task.fewshot_delimiter for shot in shots]
    return description + "".join(parts) + sample.question


def render_chat(task: Task, sample: Sample, shots: Sequence[Sample], description: str = "") -> list[Message]:
    """One user / assistant turn pair per shot, then the sample's question as the last user turn."""
    messages: list[Message] = []
    for shot in shots:
        messages += task.conversation(shot)
    messages.append({"role": "user", "content": sample.question})
    first = messages[0]
    messages[0] = {"role": "user", "content": description + first["content"]}
    return messages
