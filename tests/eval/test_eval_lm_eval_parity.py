"""herd's harness against lm-evaluation-harness on one tiny random model saved as HF LlamaForCausalLM with
Meta's tokenizer: per-sample loglikelihoods, choices and scores on MMLU- and ARC-style tasks, per-sample
generations and scores on a GSM8K-style task, all from fixtures in the official layouts.

lm-eval's own MMLU and GSM8K-CoT task files are the templates; only the data paths change, and for GSM8K
herd's extra stop string "\\n\\n" and a 64-token budget. ARC follows Meta's setting, not lm-eval's
arc_challenge (choices listed, letters scored), so its YAML mirrors herd's prompt; both sides take the first
25 train questions as shots, since herd's seeded per-sample draw (tested in test_eval_harness) has no lm-eval
counterpart.
"""

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

pytest.importorskip("transformers")
lm_eval = pytest.importorskip("lm_eval")

from herd.checkpoint import load, save
from herd.eval import EvalOptions, evaluate_task, get_task
from herd.eval.metrics import normalize_number
from herd.eval.tasks.gsm8k import GSM8K
from herd.eval.tasks.multiple_choice import ARCChallenge
from herd.model import build_model
from herd.model.presets import tiny

pytestmark = pytest.mark.slow
SUBJECTS = ("anatomy", "astronomy")
LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"


class ARCFirstShots(ARCChallenge):
    fewshot_sampling = "first"


class GSM8KShort(GSM8K):
    max_gen_toks = 64  # a budget, not a scoring setting: keeps the test fast


def _parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_data(root: Path) -> None:
    """cais/mmlu's per-subject folders, allenai/ai2_arc's ARC-Challenge parquet, openai/gsm8k's test.jsonl."""
    facts = ["bones", "stars", "cells", "planets", "muscles", "comets", "nerves", "moons"]
    for s, subject in enumerate(SUBJECTS):
        rows = [
            {"question": f"Which of these is most related to {facts[(i + s) % 8]} in {subject} lesson {i}?",
             "subject": subject, "choices": [facts[(i + k) % 8] for k in range(1, 5)], "answer": (i + s) % 4}
            for i in range(7)
        ]
        _parquet(root / f"mmlu/{subject}/test-00000-of-00001.parquet", rows[:2])
        _parquet(root / f"mmlu/{subject}/dev-00000-of-00001.parquet", rows[2:])
    arc = []
    for i in range(28):
        n = 3 + (i % 3 > 0) + (i % 3 > 1)  # 3, 4 and 5 choices; some questions use the numeric labels
        labels = ["1", "2", "3", "4", "5"][:n] if i % 4 == 0 else list("ABCDE")[:n]
        arc.append({"id": f"q{i}", "question": f"Which {facts[i % 8]} is warmer than {i} degrees?",
                    "choices": {"text": [facts[(i + k) % 8] for k in range(n)], "label": labels},
                    "answerKey": labels[i % n]})
    _parquet(root / "arc_challenge/ARC-Challenge/test-00000-of-00001.parquet", arc[:3])
    _parquet(root / "arc_challenge/ARC-Challenge/train-00000-of-00001.parquet", arc[3:])
    (root / "gsm8k").mkdir(parents=True)
    with (root / "gsm8k/test.jsonl").open("w") as f:
        for i in range(2):
            question = f"Tom has {i + 2} apples and buys {3 * i + 3} more. How many apples does he have?"
            f.write(json.dumps({"question": question, "answer": f"{i + 2} + {3 * i + 3}.\n#### {4 * i + 5}"}) + "\n")


def _write_lm_eval_tasks(folder: Path, data: Path, cache: Path) -> None:
    def files(directory: Path, *splits: str) -> dict:
        paths = {split: str(directory / f"{split}-00000-of-00001.parquet") for split in splits}
        return {"dataset_path": "parquet", "dataset_kwargs": {"data_files": paths, "cache_dir": str(cache)}}

    metrics = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]
    for subject in SUBJECTS:
        _yaml(folder / f"mmlu_{subject}.yaml", {
            "include": str(LM_EVAL_TASKS / "mmlu/default/_default_template_yaml"), "task": f"herd_mmlu_{subject}",
            **files(data / "mmlu" / subject, "test", "dev"), "num_fewshot": 5, "metric_list": metrics,
            "description": f"The following are multiple choice questions (with answers) about {subject}.\n\n",
        })
    _yaml(folder / "mmlu.yaml", {  # macro average over subjects, as the release reports MMLU
        "group": "herd_mmlu", "task": [f"herd_mmlu_{s}" for s in SUBJECTS],
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": False}],
    })
    _yaml(folder / "arc.yaml", {
        "task": "herd_arc", **files(data / "arc_challenge/ARC-Challenge", "test", "train"), "test_split": "test",
        "fewshot_split": "train", "fewshot_config": {"sampler": "first_n"}, "num_fewshot": 25,
        "output_type": "multiple_choice", "metric_list": metrics,
        "doc_to_text": "Question: {{question}}{% for text in choices.text %}\n{{'ABCDE'[loop.index0]}}. {{text}}"
                       "{% endfor %}\nAnswer:",
        "doc_to_choice": "{{'ABCDE'[:choices.text|length]|list}}",
        "doc_to_target": "{{choices.label.index(answerKey)}}",
    })
    _yaml(folder / "gsm8k.yaml", {
        "include": str(LM_EVAL_TASKS / "gsm8k/gsm8k-cot.yaml"), "task": "herd_gsm8k", "tag": [],
        "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(data / "gsm8k/test.jsonl")}, "cache_dir": str(cache)},
        "generation_kwargs": {"until": ["Q:", "\n\n"], "do_sample": False, "max_gen_toks": GSM8KShort.max_gen_toks},
    })


def _yaml(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, meta_tokenizer):
    """(herd's (scores, records) per task, lm-eval's results and samples) on the same model and files."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    root = tmp_path_factory.mktemp("lm_eval_parity")
    torch.manual_seed(0)
    model = build_model(tiny().replace(max_seq_len=2048))
    with torch.no_grad():  # weights large enough that prompts and choices move the scores well past 1e-4
        for name, param in model.named_parameters():
            param.fill_(1.0) if "norm" in name else param.normal_(0.0, 0.3)
    save(model, meta_tokenizer, root / "hf", format="hf")
    _write_data(root / "data")
    (root / "tasks").mkdir()
    _write_lm_eval_tasks(root / "tasks", root / "data", root / "cache")

    herd_model, tok = load(root / "hf")
    herd_model.eval()
    herd = {
        task.name: evaluate_task(herd_model, tok, task, root / "data", EvalOptions(batch_size=4))
        for task in (get_task("mmlu"), ARCFirstShots(), GSM8KShort())
    }
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(root / "hf"), dtype="float32", device="cpu", batch_size=4)
    out = lm_eval.simple_evaluate(
        model=lm, tasks=["herd_mmlu", "herd_arc", "herd_gsm8k"], log_samples=True, bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(root / "tasks"), include_defaults=False),
    )
    samples = {name: sorted(rows, key=lambda r: r["doc_id"]) for name, rows in out["samples"].items()}
    return herd, out["results"], samples


def _check_choices(records, lm_samples):
    assert len(records) == len(lm_samples)
    for record, lm in zip(records, lm_samples):
        lm_logprobs = [logprob for logprob, _ in lm["filtered_resps"]]
        assert record["logprobs"] == pytest.approx(lm_logprobs, abs=1e-4)
        assert record["answer"] == max(range(len(lm_logprobs)), key=lm_logprobs.__getitem__)
        assert record["metrics"]["acc"] == lm["acc"] and record["metrics"]["acc_norm"] == lm["acc_norm"]


def test_mmlu_matches_lm_eval(runs):
    herd, results, samples = runs
    scores, records = herd["mmlu"]
    for subject in SUBJECTS:
        _check_choices([r for r in records if r["group"] == subject], samples[f"herd_mmlu_{subject}"])
        assert scores["groups"][subject] == pytest.approx(results[f"herd_mmlu_{subject}"]["acc,none"])
    assert scores["acc"] == pytest.approx(results["herd_mmlu"]["acc,none"])
    assert len({r["answer"] for r in records}) > 1  # the model does not answer one letter everywhere


def test_arc_matches_lm_eval(runs):
    herd, results, samples = runs
    scores, records = herd["arc_challenge"]
    _check_choices(records, samples["herd_arc"])
    assert [len(r["logprobs"]) for r in records] == [3, 4, 5]
    assert scores["acc"] == pytest.approx(results["herd_arc"]["acc,none"])
    assert scores["acc_norm"] == pytest.approx(results["herd_arc"]["acc_norm,none"])


def test_gsm8k_generations_and_scores_match_lm_eval(runs):
    herd, results, samples = runs
    scores, records = herd["gsm8k"]
    lm_samples = samples["herd_gsm8k"]
    strict, flexible = (
        [s for s in lm_samples if s["filter"] == name] for name in ("strict-match", "flexible-extract")
    )
    assert len(records) == len(strict) == len(flexible) == 2
    assert records[0]["output"] != records[1]["output"]
    chosen = []
    for record, lm_strict, lm_flexible in zip(records, strict, flexible):
        assert record["output"] == lm_strict["resps"][0][0]
        # herd takes "The answer is N" when present, else the last number: lm-eval's strict, else flexible filter
        lm = lm_strict if lm_strict["filtered_resps"][0] != "[invalid]" else lm_flexible
        chosen.append(lm["exact_match"])
        extracted = lm["filtered_resps"][0]
        assert (record["answer"] is None) == (extracted == "[invalid]")
        if record["answer"] is not None:
            assert normalize_number(record["answer"]) == normalize_number(extracted)
        assert record["metrics"]["exact_match"] == lm["exact_match"]
    assert scores["exact_match"] == pytest.approx(sum(chosen) / len(chosen))
    if all(s["filtered_resps"][0] == "[invalid]" for s in strict):
        assert scores["exact_match"] == pytest.approx(results["herd_gsm8k"]["exact_match,flexible-extract"])
