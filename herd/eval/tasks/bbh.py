"""BIG-Bench Hard, 3-shot chain of thought with the release's cot-prompts, exact match on what follows
"So the answer is": DATA_DIR/bbh/{subtask}.json and DATA_DIR/bbh/cot-prompts/{subtask}.txt (suzgun/BIG-Bench-Hard).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from herd.errors import HerdError
from herd.eval.data import read_records, require_file
from herd.eval.task import Sample, Task

SOURCE = "the bbh/ and cot-prompts/ folders of github.com/suzgun/BIG-Bench-Hard"
_STEP = "Let's think step by step."


def bbh_question(text: str) -> str:
    return f"Q: {text.strip()}\nA: {_STEP}"


class BBH(Task):
    name, kind, num_fewshot, metric = "bbh", "generate", 3, "exact_match"
    target_delimiter, stop, max_gen_toks, chain_of_thought = "\n", ("Q:", "\n\n"), 256, True

    def __init__(self) -> None:
        self._prompts: dict[str, tuple[str, list[Sample]]] = {}

    def samples(self, data_dir: Path) -> list[Sample]:
        folder = data_dir / "bbh"
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            raise HerdError(f"no BBH subtasks in {folder}: put {SOURCE} there (bbh/*.json, bbh/cot-prompts/*.txt)")
        return [
            Sample(bbh_question(r["input"]), r["target"], gold=r["target"], group=path.stem)
            for path in files
            for r in read_records(path)
        ]

    def _prompt(self, data_dir: Path, group: str) -> tuple[str, list[Sample]]:
        """(description, exemplars) parsed from cot-prompts/{group}.txt."""
        if group not in self._prompts:
            path = require_file(data_dir / "bbh" / "cot-prompts" / f"{group}.txt", source=SOURCE)
            body = path.read_text(encoding="utf-8").split("-----\n", 1)[-1].strip()
            description, *shots = body.split("\n\nQ: ")
            exemplars = []
            for shot in shots:
                question, answer = shot.split(f"\nA: {_STEP}", 1)
                exemplars.append(Sample(bbh_question(question), answer.strip(), group=group))
            self._prompts[group] = (description.strip() + "\n\n", exemplars)
        return self._prompts[group]

    def fewshot_pool(self, data_dir: Path, group: str) -> list[Sample]:
        return self._prompt(data_dir, group)[1]

    def description(self, data_dir: Path, group: str) -> str:
        return self._prompt(data_dir, group)[0]

    def score(self, sample: Sample, output: str) -> tuple[Any, dict[str, float]]:
        found = re.findall(r"[Ss]o the answer is (.*?)(?:\.\s*$|\.?\n|$)", output)
        answer = found[-1].strip() if found else None
        return answer, {"exact_match": float(answer is not None and answer == sample.gold.strip())}
