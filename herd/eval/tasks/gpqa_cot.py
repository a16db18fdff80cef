"""GPQA main, 0-shot chain of thought, the setting of the Llama 3.1 release for post-trained models: Meta's
prompt (as published with the Llama 3.1 evals, the same as lm-eval's llama3 `mmlu_cot` template), up to 2048
generated tokens, exact match on the last "best answer is X". Data as for `gpqa` (DATA_DIR/gpqa/gpqa_main.csv).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from herd.eval.task import Sample, Task
from herd.eval.tasks.multiple_choice import LETTERS, gpqa_questions

_INSTRUCTIONS = (
    "- For simple problems:\nDirectly provide the answer with minimal explanation.\n\n"
    "- For complex problems:\nUse this step-by-step format:\n"
    "## Step 1: [Concise description]\n[Brief explanation]\n## Step 2: [Concise description]\n[Brief explanation]\n\n"
    "Regardless of the approach, always conclude with:\nThe best answer is [the_answer_letter].\n"
    "where the [the_answer_letter] is one of A, B, C or D.\n\nLet's think step by step."
)
_ANSWER = re.compile(r"best answer is ([A-Z])")


def cot_prompt(question: str, choices: list[str]) -> str:
    listed = "".join(f"\n{LETTERS[i]}. {choice}" for i, choice in enumerate(choices))
    return (
        "Given the following question and four candidate answers (A, B, C and D), choose the best answer.\n\n"
        f"Question: {question.strip()}{listed}\n\n{_INSTRUCTIONS}"
    )


class GPQACoT(Task):
    name, kind, num_fewshot, metric, chain_of_thought = "gpqa_cot", "generate", 0, "exact_match", True
    max_gen_toks = 2048

    def samples(self, data_dir: Path) -> list[Sample]:
        return [
            Sample(cot_prompt(question, choices), LETTERS[gold], gold=LETTERS[gold])
            for question, choices, gold in gpqa_questions(data_dir)
        ]

    def score(self, sample: Sample, output: str) -> tuple[Any, dict[str, float]]:
        found = _ANSWER.findall(output)
        answer = found[-1] if found else None
        return answer, {"exact_match": float(answer == sample.gold)}
