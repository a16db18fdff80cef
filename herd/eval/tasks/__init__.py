"""The benchmarks of the Llama 3 release tables, with Meta's settings, by name, and two graded multiple-choice
tasks for models too small for them (humaneval_mc, code_cloze: what CPU scaling-law sweeps score downstream).

`get_task(name)` returns a fresh task; `TASKS` maps each name to its class.
"""

from __future__ import annotations

from herd.errors import HerdError
from herd.eval.task import Task
from herd.eval.tasks.agieval import AGIEval
from herd.eval.tasks.bbh import BBH
from herd.eval.tasks.code_cloze import CodeCloze
from herd.eval.tasks.drop import DROP
from herd.eval.tasks.gpqa_cot import GPQACoT
from herd.eval.tasks.gsm8k import GSM8K
from herd.eval.tasks.humaneval import HumanEval, HumanEvalChoice
from herd.eval.tasks.minerva_math import MATH
from herd.eval.tasks.multiple_choice import GPQA, MMLU, ARCChallenge

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (MMLU, AGIEval, BBH, ARCChallenge, DROP, GPQA, GPQACoT, HumanEval, GSM8K, MATH, HumanEvalChoice, CodeCloze)
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise HerdError(f"unknown eval task {name!r}; choose from: {', '.join(TASKS)}")
    return TASKS[name]()


__all__ = ["TASKS", "get_task"]
