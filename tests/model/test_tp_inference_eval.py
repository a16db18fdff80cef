"""`herd eval --tp 2` under torchrun: per-sample records (loglikelihoods, generations, scores) equal tp=1's."""

import json

import pytest

from herd.cli import main
from tests.eval.test_eval_harness import data_dir  # noqa: F401 - the benchmark fixtures in the official layouts
from tests.model.test_tp_inference import torchrun

TASKS = "arc_challenge,drop"


def _records(out) -> dict[str, list[dict]]:
    return {task: [json.loads(line) for line in (out / f"samples_{task}.jsonl").read_text().splitlines()]
            for task in TASKS.split(",")}


def _close(a, b) -> bool:
    """Equal records, floats within 1e-4 (sums of fp32 log-probabilities over whole continuations)."""
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-4
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.slow
def test_eval_tp2_records_equal_tp1(data_dir, tmp_path, capsys):  # noqa: F811 - the imported fixture
    common = ["--model", "tiny", "--tasks", TASKS, "--data-dir", str(data_dir), "--limit", "2"]
    main(["eval", *common, "--out", str(tmp_path / "tp1")])
    torchrun(2, "-m", "herd.cli", "eval", *common, "--out", str(tmp_path / "tp2"), "--tp", "2")
    tp1, tp2 = _records(tmp_path / "tp1"), _records(tmp_path / "tp2")
    assert all(len(record["logprobs"]) == 4 for record in tp1["arc_challenge"])  # per-choice loglikelihoods
    assert all(_close(tp1[task], tp2[task]) for task in tp1), (tp1, tp2)
