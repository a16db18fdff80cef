"""Downstream scores of one model for scaling laws: per task, the normalised negative log-likelihood of the correct
answer (nats per character of the answer, Llama 3's first-step quantity) and the task's headline accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from herd.errors import HerdError
from herd.eval.evaluate import EvalOptions, build_prompts, evaluate_task
from herd.eval.loglikelihood import encode_pair, loglikelihood_tokens
from herd.eval.metrics import mean
from herd.eval.task import Task
from herd.model import Transformer
from herd.tokenizer import Tokenizer


def downstream_task(name: str) -> Task:
    """A herd eval task, or one of the embedded corpus's synthetic tasks (synth_math_mc, synth_knowledge, ...)."""
    from herd.eval.tasks import TASKS, get_task
    from herd.eval.tasks.synthetic import SCALING_SYNTHETIC

    synthetic = {cls.name: cls for cls in SCALING_SYNTHETIC}
    if name in synthetic:
        return synthetic[name]()
    if name not in TASKS:
        raise HerdError(f"unknown downstream task {name!r}; choose from: {', '.join([*TASKS, *synthetic])}")
    return get_task(name)


def score_task(model: Transformer, tok: Tokenizer, task: Task, data_dir: Path, *, limit: int | None,
               batch_size: int) -> dict[str, Any]:
    """{"nll": mean NLL per character of the gold answer, "acc": the headline metric, "chance": its floor, "n"}."""
    options = EvalOptions(limit=limit, batch_size=batch_size)
    result, records = evaluate_task(model, tok, task, data_dir, options)
    samples = task.samples(data_dir)[:limit]
    if task.kind == "multiple_choice":
        golds = [s.choices[s.gold] for s in samples]
        logprobs = [r["logprobs"][s.gold] for r, s in zip(records, samples, strict=True)]
        chance = mean([1 / len(s.choices) for s in samples])
    else:
        prompts = build_prompts(task, samples, data_dir, options)
        golds = [s.answer for s in samples]
        pairs = [encode_pair(tok, p, task.target_delimiter + g) for p, g in zip(prompts, golds, strict=True)]
        logprobs = [r.logprob for r in loglikelihood_tokens(model, pairs, batch_size=batch_size)]
        chance = 0.0
    nll = mean([-lp / max(len(g), 1) for lp, g in zip(logprobs, golds, strict=True)])
    return {"nll": nll, "acc": result[task.metric], "chance": chance, "n": result["n"]}


__all__ = ["downstream_task", "score_task"]
