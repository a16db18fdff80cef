"""Letter-scored multiple-choice tasks: MMLU (5-shot, macro), ARC-Challenge (25-shot) and GPQA main
(0-shot), with the choices listed in the prompt and the model scored on " A", " B", ...
"""

from __future__ import annotations

import random
from pathlib import Path

from herd.eval.data import find_split, read_records, require_file
from herd.eval.task import Sample, Task

LETTERS = "ABCDEFGHIJ"


def letter_sample(question: str, choices: list[str], gold: int, group: str = "") -> Sample:
    """"{question}\\nA. ..\\nB. ..\\nAnswer:" scored on the letters."""
    listed = "".join(f"\n{LETTERS[i]}. {choice}" for i, choice in enumerate(choices))
    letters = tuple(LETTERS[: len(choices)])
    return Sample(f"{question.strip()}{listed}\nAnswer:", letters[gold], letters, gold, group)


class MMLU(Task):
    """cais/mmlu: DATA_DIR/mmlu/[all/]{test,dev}-*.parquet (or .jsonl) with question, subject, choices, answer."""

    name, kind, num_fewshot, metric, average = "mmlu", "multiple_choice", 5, "acc", "macro"
    source = "the HF dataset cais/mmlu (its all/ folder)"

    def _split(self, data_dir: Path, split: str) -> list[Sample]:
        root = data_dir / "mmlu"
        root = root / "all" if (root / "all").is_dir() else root
        rows = read_records(find_split(root, split, source=self.source))
        return [letter_sample(r["question"], list(r["choices"]), int(r["answer"]), r["subject"]) for r in rows]

    def samples(self, data_dir: Path) -> list[Sample]:
        return self._split(data_dir, "test")

    def fewshot_pool(self, data_dir: Path, group: str) -> list[Sample]:
        return [s for s in self._split(data_dir, "dev") if s.group == group]

    def description(self, data_dir: Path, group: str) -> str:
        return f"The following are multiple choice questions (with answers) about {group.replace('_', ' ')}.\n\n"


class ARCChallenge(Task):
    """allenai/ai2_arc ARC-Challenge: DATA_DIR/arc_challenge/{test,train}-*.parquet (question, choices, answerKey)."""

    name, kind, num_fewshot, fewshot_sampling, metric = "arc_challenge", "multiple_choice", 25, "random", "acc"
    source = "the HF dataset allenai/ai2_arc (its ARC-Challenge/ folder)"

    def _split(self, data_dir: Path, split: str) -> list[Sample]:
        rows = read_records(find_split(data_dir / "arc_challenge", split, source=self.source))
        return [
            letter_sample(
                "Question: " + r["question"], list(r["choices"]["text"]), list(r["choices"]["label"]).index(r["answerKey"])
            )
            for r in rows
        ]

    def samples(self, data_dir: Path) -> list[Sample]:
        return self._split(data_dir, "test")

    def fewshot_pool(self, data_dir: Path, group: str) -> list[Sample]:
        return self._split(data_dir, "train")


def gpqa_questions(data_dir: Path) -> list[tuple[str, list[str], int]]:
    """(question, the four answers shuffled by a fixed per-question seed, index of the right one) of GPQA main."""
    path = require_file(data_dir / "gpqa" / "gpqa_main.csv", source="gpqa_main.csv of the HF dataset Idavidrein/gpqa")
    questions = []
    for index, row in enumerate(read_records(path)):
        answers = [row["Correct Answer"]] + [row[f"Incorrect Answer {i}"] for i in (1, 2, 3)]
        order = random.Random(f"gpqa:{index}").sample(range(4), 4)
        questions.append((row["Question"], [answers[i].strip() for i in order], order.index(0)))
    return questions


class GPQA(Task):
    """Idavidrein/gpqa main: DATA_DIR/gpqa/gpqa_main.csv, scored on the letters (the release's 0-shot setting)."""

    name, kind, num_fewshot, metric = "gpqa", "multiple_choice", 0, "acc"

    def samples(self, data_dir: Path) -> list[Sample]:
        return [letter_sample(question, choices, gold) for question, choices, gold in gpqa_questions(data_dir)]
