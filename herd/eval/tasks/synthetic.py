"""Synthetic counterparts of the release's benchmarks, scored by the speedrun and scaling sweeps on the held-out eval
files of herd.corpus (DATA_DIR/*.jsonl):

- `synth_knowledge`: 4-way multiple choice about countries whose facts appear only in encyclopedic articles
  (never in quiz form, never in SFT): MMLU-like, accuracy by loglikelihood;
- `synth_math`: held-out word problems, chain of thought, exact match on the final answer (`#### N`, as
  `herd.eval.metrics.final_answer` reads it; GSM8K-like);
- `synth_code`: complete a function from its signature and docstring; pass@1 of its asserts in the sandbox
  (HumanEval-like);
- `synth_addition`: the 2-digit addition probe, "What is 37 + 45?" (never asked in training), greedy, exact match
  on the number (`#### N`, else the reply's last number);
- `synth_math_mc`: the held-out word problems as 4-way multiple choice between the worked solution and copies
  whose final result is off by 1 or 10 (accuracy by loglikelihood: graded enough for the tiny models of a
  scaling sweep, where exact match stays at 0).

`chat=True` renders a question as a user turn (SFT / DPO models, 0-shot); plain mode uses 3-shot text prompts
for the base model.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from herd.corpus.code import make_function
from herd.corpus.math import make_problem
from herd.eval.metrics import exact_match, final_answer, normalize_number
from herd.eval.sandbox import SandboxLimits, run_program
from herd.eval.task import Sample, Task


def _rows(data_dir: Path, name: str) -> list[dict[str, Any]]:
    with (Path(data_dir) / f"{name}.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class SynthKnowledge(Task):
    name, kind, metric = "synth_knowledge", "multiple_choice", "acc"

    def __init__(self, chat: bool = False) -> None:
        self.chat = chat

    def samples(self, data_dir: Path) -> list[Sample]:
        form = "{}" if self.chat else "Question: {}\nAnswer:"
        return [Sample(form.format(r["question"]), r["choices"][r["gold"]], tuple(r["choices"]), r["gold"])
                for r in _rows(data_dir, "knowledge")]


class SynthMath(Task):
    name, kind, metric, max_gen_toks = "synth_math", "generate", "exact_match", 96
    stop = ("\n\n", "Question:")
    file, fallback_last_number = "math", False

    def __init__(self, chat: bool = False) -> None:
        self.chat = chat
        self.num_fewshot = 0 if chat else 3

    def _sample(self, question: str, answer: str, gold: str) -> Sample:
        return Sample(question if self.chat else f"Question: {question}\nAnswer:", answer, gold=gold)

    def samples(self, data_dir: Path) -> list[Sample]:
        return [self._sample(r["question"], r["answer"], r["gold"]) for r in _rows(data_dir, self.file)]

    def fewshot_pool(self, data_dir: Path, group: str) -> list[Sample]:
        rng = random.Random(1234)
        return [self._sample(p.question, p.solution, str(p.answer)) for p in (make_problem(rng) for _ in range(3))]

    def score(self, sample: Sample, output: str) -> tuple[Any, dict[str, float]]:
        answer = final_answer(output, fallback_last_number=self.fallback_last_number)
        return answer, {"exact_match": exact_match(answer, sample.gold, normalize_number)}


class SynthAddition(SynthMath):
    name, file, fallback_last_number = "synth_addition", "addition", True


class SynthCode(Task):
    name, kind, metric, max_gen_toks = "synth_code", "generate", "pass@1", 48
    stop = ("\n\n", "\ndef ", "\nassert")
    limits = SandboxLimits(wall_seconds=5.0, cpu_seconds=5)

    def __init__(self, chat: bool = False) -> None:
        self.chat = chat
        self.num_fewshot = 0 if chat else 2

    def _sample(self, prompt: str, body: str, tests: str, name: str) -> Sample:
        question = f"Complete this function:\n{prompt}" if self.chat else prompt
        return Sample(question, prompt + body if self.chat else body, gold=name, meta={"prompt": prompt, "tests": tests})

    def samples(self, data_dir: Path) -> list[Sample]:
        return [self._sample(r["prompt"], r["body"], r["tests"], r["name"]) for r in _rows(data_dir, "code")]

    def fewshot_pool(self, data_dir: Path, group: str) -> list[Sample]:
        rng = random.Random(4321)
        return [self._sample(f.prompt, f.body, f.tests, f.name) for f in (make_function(rng) for _ in range(2))]

    target_delimiter = ""

    def completion(self, sample: Sample, output: str) -> str:
        """The function the model wrote: its output without code fences, after the prompt unless it restates it."""
        code = re.sub(r"^```(?:python)?\n|```\s*$", "", output.strip("\n"), flags=re.MULTILINE)
        return code if f"def {sample.gold}(" in code else sample.meta["prompt"] + code

    def program(self, sample: Sample, output: str) -> str:
        return self.completion(sample, output) + "\n\n" + sample.meta["tests"] + "\n"

    def score(self, sample: Sample, output: str) -> tuple[Any, dict[str, float]]:
        result = run_program(self.program(sample, output), self.limits)
        return result.status, {"pass@1": float(result.status == "passed")}


class SynthMathChoice(Task):
    name, kind, metric = "synth_math_mc", "multiple_choice", "acc"

    def samples(self, data_dir: Path) -> list[Sample]:
        out = []
        for index, r in enumerate(_rows(data_dir, "math")):
            gold = int(r["gold"])
            wrong = [g for g in (gold + 1, gold - 1, gold + 10, gold - 10) if g >= 0]
            rng = random.Random(index)
            choices = [r["answer"]] + [_with_result(r["answer"], r["gold"], str(g)) for g in rng.sample(wrong, 3)]
            rng.shuffle(choices)
            out.append(Sample(f"Question: {r['question']}\nAnswer:", r["answer"], tuple(choices), choices.index(r["answer"])))
        return out


def _with_result(solution: str, gold: str, wrong: str) -> str:
    """The worked solution with its last two mentions of the result (the final step and "#### N") replaced."""
    head, *tails = solution.rsplit(gold, 2)
    return head + wrong.join([""] + tails) if len(tails) == 2 else solution.replace(gold, wrong)


SYNTHETIC = (SynthKnowledge, SynthMath, SynthAddition, SynthCode)
SCALING_SYNTHETIC = (SynthKnowledge, SynthMath, SynthCode, SynthMathChoice)
"""Synthetic tasks a scaling sweep can score (SYNTHETIC are the speedrun's)."""
