"""DROP, 3-shot (drawn from the train split by seed), F1 and exact match with DROP's official semantics:
DATA_DIR/drop/{validation,train}-*.parquet as the HF dataset ucinlp/drop (passage, question, answers_spans).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from herd.eval.data import find_split, read_records
from herd.eval.drop_f1 import drop_metrics
from herd.eval.task import Sample, Task

SOURCE = "the HF dataset ucinlp/drop (its data/ folder)"


def drop_sample(row: dict) -> Sample:
    spans = tuple(row["answers_spans"]["spans"])
    question = f"{row['passage'].strip()}\nQuestion: {row['question'].strip()}\nAnswer:"
    return Sample(question, ", ".join(spans), gold=[list(spans)], meta={"query_id": row.get("query_id", "")})


class DROP(Task):
    name, kind, num_fewshot, fewshot_sampling, metric = "drop", "generate", 3, "random", "f1"
    stop, max_gen_toks = ("\n",), 64

    def samples(self, data_dir: Path) -> list[Sample]:
        return [drop_sample(r) for r in read_records(find_split(data_dir / "drop", "validation", source=SOURCE))]

    def fewshot_pool(self, data_dir: Path, group: str) -> list[Sample]:
        return [drop_sample(r) for r in read_records(find_split(data_dir / "drop", "train", source=SOURCE))]

    def score(self, sample: Sample, output: str) -> tuple[Any, dict[str, float]]:
        answer = output.strip()
        scores = drop_metrics(answer, sample.gold)
        return answer, {"f1": scores["f1"], "em": scores["em"]}
