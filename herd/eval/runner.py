"""`herd eval`: run tasks on a model and write results.json, one samples_{task}.jsonl per task and a
results.md table laid out like the Llama 3 release's (benchmark, shots, metric, score).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from herd.eval.evaluate import EvalOptions, evaluate_task
from herd.eval.tasks import get_task
from herd.run_dir import atomic_open, write_json, write_text


def run_eval(
    model_path: str | Path,
    tasks: Sequence[str],
    data_dir: str | Path = "data/benchmarks",
    *,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    chat: bool = False,
    batch_size: int = 8,
    seed: int = 0,
    tp: int = 1,
) -> dict[str, Any]:
    """Evaluate `model_path` (anything herd.load takes) on `tasks`; returns {task: scores} and writes files
    under `out_dir` when given. `tp` > 1 (under torchrun): every rank runs the same evaluation on its slice of the
    weights, rank 0 writes the files."""
    from herd.checkpoint import load
    from herd.model.tensor_parallel import init_tensor_parallel

    group = init_tensor_parallel(tp, "cpu")  # the device load() puts the model on
    model, tok = load(model_path, tp=group)
    if group is not None and group.rank:
        out_dir = None  # rank 0 writes
    model.eval()
    task_objects = [get_task(name) for name in tasks]  # unknown names fail before any work
    options = EvalOptions(chat=chat, limit=limit, seed=seed, batch_size=batch_size)
    results: dict[str, Any] = {}
    for task in task_objects:
        quiet = bool(group and group.rank)  # one progress bar, rank 0's; none when a task fails at once
        with tqdm(desc=task.name, unit="req", delay=0.5, disable=quiet) as bar:
            scores, records = evaluate_task(model, tok, task, Path(data_dir), options, on_done=bar.update)
        results[task.name] = scores
        if out_dir is not None:
            write_records(Path(out_dir) / f"samples_{task.name}.jsonl", records)
    if out_dir is not None:
        out = Path(out_dir)
        meta = {"model": str(model_path), "chat": chat, "limit": limit, "seed": seed}
        write_json(out / "results.json", {"config": meta, "results": results})
        write_text(out / "results.md", markdown_table(results, str(model_path), task_objects))
    return results


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_open(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def markdown_table(results: dict[str, Any], model_name: str, tasks: Sequence[Any]) -> str:
    """| Benchmark | shots | metric | model |, scores in percent as the release prints them."""
    lines = [f"| Benchmark | Shots | Metric | {model_name} |", "|---|---|---|---|"]
    for task in tasks:
        scores = results[task.name]
        metric = f"{task.metric} ({task.average})" if task.average == "macro" else task.metric
        cot = " CoT" if task.chain_of_thought else ""
        lines.append(f"| {task.name} | {task.num_fewshot}{cot} | {metric} | {100 * scores[task.metric]:.1f} |")
    return "\n".join(lines) + "\n"
