"""AGIEval English (multiple-choice subsets), 3-5 shot from the release's few_shot_prompts.csv, scored on
"(A)".."(E)": DATA_DIR/agieval/{subset}.jsonl as in the AGIEval repository's data/v1 folder.
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path

from herd.eval.data import read_records, require_file
from herd.eval.task import Sample, Task

SUBSETS = ("aqua-rat", "logiqa-en", "lsat-ar", "lsat-lr", "lsat-rc", "sat-en", "sat-en-without-passage", "sat-math")
SOURCE = "the AGIEval repository's data/v1/{name} (github.com/ruixiangcui/AGIEval)"


def agieval_sample(row: dict, group: str) -> Sample:
    """"{passage}\\nQ: {question} Answer Choices: (A).. (B)..\\nA: Among A through E, the answer is"."""
    options = [o.strip() for o in row["options"]]
    letters = tuple(f"({chr(ord('A') + i)})" for i in range(len(options)))
    passage = (row.get("passage") or "").strip()
    question = (
        (passage + "\n" if passage else "")
        + f"Q: {row['question'].strip()} Answer Choices: {' '.join(options)}\n"
        + f"A: Among A through {letters[-1][1]}, the answer is"
    )
    gold = "ABCDEFGHIJ".index(row["label"].strip()[0])
    return Sample(question, letters[gold], letters, gold, group)


class AGIEval(Task):
    name, kind, num_fewshot, metric = "agieval", "multiple_choice", 5, "acc"

    def samples(self, data_dir: Path) -> list[Sample]:
        samples = []
        for subset in SUBSETS:
            path = require_file(data_dir / "agieval" / f"{subset}.jsonl", source=SOURCE.format(name=f"{subset}.jsonl"))
            samples += [agieval_sample(row, subset) for row in read_records(path)]
        return samples

    def fewshot_pool(self, data_dir: Path, group: str) -> list[Sample]:
        """The csv's "sample N" rows of the subset's column (sat-en's for sat-en-without-passage, passage dropped)."""
        path = require_file(data_dir / "agieval" / "few_shot_prompts.csv", source=SOURCE.format(name="few_shot_prompts.csv"))
        column = "sat-en" if group == "sat-en-without-passage" else group
        with path.open(encoding="utf-8", newline="") as f:
            rows = [row for row in csv.DictReader(f) if row[""].startswith("sample")]
        shots = []
        for row in rows:
            if row[column].strip():
                record = ast.literal_eval(row[column])
                if group == "sat-en-without-passage":
                    record["passage"] = None
                shots.append(agieval_sample(record, group))
        return shots
