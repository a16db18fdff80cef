"""Running one task on one model: few-shot prompts for every sample, loglikelihood or generate-until
requests, per-sample records, and the task's aggregate scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.eval.generate_until import generate_until
from herd.eval.loglikelihood import encode_pair, loglikelihood_tokens
from herd.eval.metrics import bootstrap_stderr, macro_mean, majority_vote, mean, stderr_of_mean
from herd.eval.task import Sample, Task, choose_fewshot, render_chat, render_plain
from herd.model import Transformer
from herd.tokenizer import Tokenizer


@dataclass(frozen=True)
class EvalOptions:
    """How a task is run."""

    chat: bool = False
    """Prompt in the Llama 3 chat format (instruct models): shots as turns, the question as the last user turn."""
    num_fewshot: int | None = None
    """Override the task's number of few-shot examples."""
    limit: int | None = None
    """Evaluate only the first `limit` samples."""
    seed: int = 0
    """Seeds few-shot draws and sampling."""
    batch_size: int = 8
    repeats: int = 1
    """Generations per sample (pass@1 and maj@k over them); >1 wants temperature > 0."""
    temperature: float = 0.0
    top_p: float = 1.0


def build_prompts(task: Task, samples: list[Sample], data_dir: Path, options: EvalOptions) -> list[str | list]:
    """Each sample's context: plain text, or chat messages with `options.chat`."""
    k = task.num_fewshot if options.num_fewshot is None else options.num_fewshot
    pools: dict[str, list[Sample]] = {}
    prompts = []
    for index, sample in enumerate(samples):
        shots = []
        if k:
            pool = pools.setdefault(sample.group, task.fewshot_pool(data_dir, sample.group))
            shots = choose_fewshot(pool, sample, k, how=task.fewshot_sampling, seed=options.seed, key=f"{task.name}:{index}")
        render = render_chat if options.chat else render_plain
        prompts.append(render(task, sample, shots, task.description(data_dir, sample.group)))
    return prompts


def evaluate_task(
    model: Transformer,
    tok: Tokenizer,
    task: Task,
    data_dir: Path,
    options: EvalOptions = EvalOptions(),
    on_done: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(aggregate scores, one record per sample with prompt, output, extracted answer and metrics)."""
    samples = task.samples(data_dir)[: options.limit]
    prompts = build_prompts(task, samples, data_dir, options)
    if task.kind == "multiple_choice":
        records = _run_choices(model, tok, task, samples, prompts, options, on_done)
    else:
        records = _run_generation(model, tok, task, samples, prompts, options, on_done)
    return aggregate(task, records), records


def _context_ids(tok: Tokenizer, prompt: str | list) -> list[int]:
    return tok.encode(prompt, bos=True) if isinstance(prompt, str) else tok.encode_dialog(prompt)


def _run_choices(model, tok, task, samples, prompts, options, on_done):  # noqa: ANN001, ANN202 - private
    pairs = []
    for sample, prompt in zip(samples, prompts, strict=True):
        for choice in sample.choices:
            if isinstance(prompt, str):
                pairs.append(encode_pair(tok, prompt, task.target_delimiter + choice))
            else:  # chat: the reply starts right after the assistant header
                pairs.append((tok.encode_dialog(prompt), tok.encode(choice.strip())))
    scores = loglikelihood_tokens(model, pairs, batch_size=options.batch_size, on_done=on_done)
    records, offset = [], 0
    for index, (sample, prompt) in enumerate(zip(samples, prompts, strict=True)):
        logprobs = [s.logprob for s in scores[offset : offset + len(sample.choices)]]
        offset += len(sample.choices)
        chosen, metrics = task.score_choices(sample, logprobs)
        records.append(_record(task, index, sample, prompt, sample.choices[chosen], chosen, metrics, logprobs=logprobs))
    return records


def _run_generation(model, tok, task, samples, prompts, options, on_done):  # noqa: ANN001, ANN202 - private
    ids = [_context_ids(tok, prompt) for prompt in prompts for _ in range(options.repeats)]
    outputs = generate_until(
        model, tok, ids, stop=() if options.chat else task.stop, max_gen_toks=task.max_gen_toks,
        temperature=options.temperature, top_p=options.top_p, seed=options.seed, batch_size=options.batch_size,
        on_done=on_done,
    )
    records = []
    for index, (sample, prompt) in enumerate(zip(samples, prompts, strict=True)):
        mine = outputs[index * options.repeats : (index + 1) * options.repeats]
        scored = [task.score(sample, output) for output in mine]
        metrics = {name: mean([m[name] for _, m in scored]) for name in scored[0][1]}
        if options.repeats > 1:
            voted = majority_vote([answer for answer, _ in scored])
            metrics[f"maj@{options.repeats}"] = next((m[task.metric] for a, m in scored if a == voted), 0.0)
        records.append(_record(task, index, sample, prompt, mine if options.repeats > 1 else mine[0], scored[0][0], metrics))
    return records


def _record(task, index, sample, prompt, output, answer, metrics, **extra):  # noqa: ANN001, ANN202 - private
    return {
        "index": index, "group": sample.group, "prompt": prompt, "output": output, "answer": answer,
        "target": sample.gold if sample.gold is not None else sample.answer, "correct": metrics.get(task.metric),
        "metrics": metrics, **extra,
    }


def aggregate(task: Task, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every metric over samples (and over groups for a macro task), with standard errors, the
    headline metric first; per-group means under "groups"."""
    groups = [r["group"] for r in records]
    result: dict[str, Any] = {"task": task.name, "metric": task.metric, "average": task.average, "n": len(records)}
    names = list(records[0]["metrics"]) if records else []
    for name in names:
        values = [r["metrics"][name] for r in records]
        if task.average == "macro":
            result[name] = macro_mean(values, groups)
            result[f"{name}_stderr"] = bootstrap_stderr(
                lambda ix, values=values: macro_mean([values[i] for i in ix], [groups[i] for i in ix]), len(values)
            )
        else:
            result[name] = mean(values)
            result[f"{name}_stderr"] = stderr_of_mean(values)
    if len(set(groups)) > 1:
        result["groups"] = {
            g: mean([r["metrics"][task.metric] for r in records if r["group"] == g]) for g in dict.fromkeys(groups)
        }
    return result
