"""herd scaling: a real micro sweep on the embedded corpus (planning, parallel training, downstream scores,
resume), and fit / predict / report / CLI on a sweep directory of runs with known scaling."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from herd.cli import main
from herd.config_overrides import from_dict
from herd.errors import HerdError
from herd.eval.tasks.synthetic import SynthMathChoice
from herd.scaling import ScalingConfig, fit, load_scaling_config, mix, predict_target
from herd.scaling.downstream import downstream_task
from herd.scaling.plan import plan_sweep
from herd.scaling.presets import PRESETS, with_corpus_data
from herd.scaling.runs import run_sweep_runs
from tests.scaling.test_scaling_fits import TRUE, synthetic_records

LADDER = {
    "d16": {"dim": 16, "n_layers": 1, "n_heads": 1, "n_kv_heads": 1, "multiple_of": 16},
    "d32": {"dim": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "multiple_of": 16},
    "d48": {"dim": 48, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "multiple_of": 16},
}


def micro_config(out, **changes) -> ScalingConfig:
    values = {
        "out_dir": str(out), "corpus": "micro", "vocab_size": 512, "budgets": [3e9], "models": LADDER,
        "train": {"model": {"preset": "tiny", "fields": {"max_seq_len": 128}}, "batch_size": 4, "seq_len": 32,
                  "optim": {"lr": 3e-3}, "device": "cpu", "data": {"val_batches": 2}},
        "min_steps": 5, "workers": 2, "downstream": {"tasks": ["synth_math_mc"], "limit": 4},
        **changes,
    }
    return from_dict(ScalingConfig, values)


@pytest.fixture(scope="module")
def micro_sweep(tmp_path_factory):
    config = with_corpus_data(micro_config(tmp_path_factory.mktemp("scaling") / "sweep"), log=lambda line: None)
    runs, skipped = plan_sweep(config)
    return config, runs, skipped, run_sweep_runs(config, runs, log=lambda line: None)


def test_plan_spends_each_budget(micro_sweep):
    config, runs, skipped, _ = micro_sweep
    assert runs and all(r.steps >= config.min_steps for r in runs)
    for run in runs:
        step_flops = 6 * run.compute_params * 4 * 32
        assert abs(run.flops - run.budget) <= step_flops / 2  # whole steps: within half a step of the budget
    assert all("min_steps" in line or "max_epochs" in line for line in skipped)


def test_runs_train_score_and_resume(micro_sweep):
    config, runs, _, records = micro_sweep
    assert [r["name"] for r in records] == [r.name for r in runs]
    for record in records:
        assert math.isfinite(record["val_loss"]) and 0 < record["val_loss"] < math.log(600)
        task = record["downstream"]["synth_math_mc"]
        assert task["n"] == 4 and task["chance"] == pytest.approx(0.25) and task["nll"] > 0 and 0 <= task["acc"] <= 1
        manifest = json.loads((config.run_dir / "runs" / record["name"] / "manifest.json").read_text())
        assert manifest["steps"] == record["steps"] and manifest["tokens"] == record["tokens"]
    lines = []
    again = run_sweep_runs(config, runs, log=lines.append)
    assert again == records and lines == []  # everything finished: nothing retrained


def test_mix_experiment_picks_the_math_heavy_mix_for_math(micro_sweep):
    config = dataclasses.replace(
        micro_sweep[0], budgets=[1.5e9, 3e9], models={"d32": LADDER["d32"]}, target_budget=3e10,
        mixes={"math": {"math": 0.85, "web": 0.05, "code": 0.05, "multilingual": 0.05},
               "web": {"math": 0.05, "web": 0.85, "code": 0.05, "multilingual": 0.05}},
    )
    result = mix(config, log=lambda line: None)
    assert result["chosen"] == "math" and result["task"] == "synth_math_mc"
    assert result["mixes"]["math"]["predicted_nll"] < result["mixes"]["web"]["predicted_nll"]
    assert "(chosen)" in (config.run_dir / "mix.md").read_text()


def test_math_choice_task_offers_near_miss_results(micro_sweep):
    config = micro_sweep[0]
    samples = SynthMathChoice().samples(Path(config.downstream.data_dir))
    assert len(samples) > 10
    for sample in samples:
        gold = sample.choices[sample.gold]
        assert len(set(sample.choices)) == 4 and gold == sample.answer
        result = int(gold.rsplit("#### ", 1)[1])
        for choice in sample.choices:
            if choice != gold:
                wrong = int(choice.rsplit("#### ", 1)[1])
                assert abs(wrong - result) in (1, 10) and choice.count(str(wrong)) >= 2


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(HerdError, match="budgets is empty"):
        load_scaling_config(overrides=["models={\"a\": {}}"])
    with pytest.raises(HerdError, match="train.steps is set per run"):
        micro_config(tmp_path, train={"steps": 3})
    with pytest.raises(HerdError, match="unknown config key 'budget'"):
        load_scaling_config(overrides=["budget=[1]"])
    assert set(PRESETS) == {"micro", "gpu"}
    micro = load_scaling_config(preset_name="micro", overrides=["workers=1", "train.optim.lr=1e-3", "models.d16-l2.n_layers=3",
                                                                   "train.data.val_sources.val=shards/val"])
    assert micro.workers == 1 and micro.target_budget >= 10 * max(micro.budgets)
    assert micro.train.optim.lr == 1e-3 and micro.train.batch_size == 4 and micro.train.model.fields == {"max_seq_len": 256}
    d16 = micro.pretrain_config("r", steps=400, fields=micro.models["d16-l2"]).model.resolve(512)
    assert (d16.dim, d16.n_layers) == (16, 3)
    run = micro.pretrain_config("r", steps=400, fields=micro.models["d24-l2"])
    assert (run.out_dir, run.steps, run.optim.warmup_steps, run.eval_interval, run.progress) == (
        "runs/scaling-micro/runs/r", 400, 20, 400, False)
    assert run.model.fields == {"max_seq_len": 256, **micro.models["d24-l2"]} and micro.train.model.fields == {"max_seq_len": 256}


def write_fake_sweep(directory, records):
    """A sweep directory as `herd scaling sweep` leaves it, holding `records`."""
    runs = []
    for i, record in enumerate(records):
        record = {**record, "name": f"run{i}", "model": "m", "mix": None, "params": int(record["compute_params"]),
                  "steps": 10, "flops": record["budget"]}
        (directory / "runs" / record["name"]).mkdir(parents=True)
        (directory / "runs" / record["name"] / "scaling.json").write_text(json.dumps(record))
        runs.append(record)
    (directory / "plan.json").write_text(json.dumps({"runs": runs, "skipped": ["big-C1: 3 steps < min_steps=5"]}))


def test_fit_predict_and_report_on_known_scaling(tmp_path):
    write_fake_sweep(tmp_path, synthetic_records(noise=0.001))
    config = ScalingConfig(out_dir=str(tmp_path), budgets=[1e18], models={"m": {}}, bootstrap_samples=10)
    fits = fit(config, log=lambda line: None)
    assert fits["n_opt_law"]["exponent"] == pytest.approx(TRUE.beta / (TRUE.alpha + TRUE.beta), abs=0.03)
    report = (tmp_path / "report.md").read_text()
    for part in ("## Runs", "## Fits", "N*(C) =", "L(N, D) =", "mc: compute-optimal NLL", "Left out: big-C1",
                 "![isoflops](isoflops.png)", "![downstream](downstream.png)"):
        assert part in report
    for png in ("isoflops.png", "frontier.png", "downstream.png"):
        assert (tmp_path / png).stat().st_size > 5000
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert saved["surface"]["alpha"] == pytest.approx(TRUE.alpha, rel=0.05)


def test_cli_fit_and_errors(tmp_path, capsys):
    write_fake_sweep(tmp_path, synthetic_records(noise=0.001))
    main(["scaling", "fit", f"out_dir={tmp_path}", "budgets=[1e18]", "models={\"m\": {}}", "bootstrap_samples=5"])
    assert "N*(C) =" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["scaling", "fit", f"out_dir={tmp_path / 'empty'}", "budgets=[1e18]", "models={\"m\": {}}"])
    assert exit_info.value.code == 2
    assert "holds no sweep" in capsys.readouterr().err


def test_a_sweep_without_a_bracketed_minimum_still_reports_and_predict_refuses(tmp_path, capsys):
    write_fake_sweep(tmp_path, synthetic_records(factors=(2.0, 3.0, 4.0, 6.0)))  # every budget's loss rises with N
    args = [f"out_dir={tmp_path}", "budgets=[1e18]", "models={\"m\": {}}", "bootstrap_samples=5"]
    main(["scaling", "fit", *args])
    out = capsys.readouterr().out
    assert "no budget's loss minimum is bracketed by the sizes run" in out and "add models smaller than N =" in out
    report = (tmp_path / "report.md").read_text()
    assert "No frontier N*(C): no budget's loss minimum is bracketed" in report and "L(N, D) =" in report
    for png in ("isoflops.png", "frontier.png", "downstream.png"):
        assert (tmp_path / png).stat().st_size > 5000
    with pytest.raises(SystemExit) as exit_info:
        main(["scaling", "predict", "--budget", "1e20", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot predict: no budget's loss minimum is bracketed" in err and "Traceback" not in err


def test_predict_needs_a_budget(tmp_path):
    write_fake_sweep(tmp_path, synthetic_records())
    config = ScalingConfig(out_dir=str(tmp_path), budgets=[1e18], models={"m": {}})
    with pytest.raises(HerdError, match="no target budget"):
        predict_target(config)


def test_stdlib_corpus_data_is_built_once_and_feeds_code_cloze(tmp_path):
    lines = []
    config = with_corpus_data(micro_config(tmp_path, corpus="stdlib", downstream={"tasks": ["code_cloze"]}),
                              log=lines.append)
    data = config.train.data
    assert set(data.sources) == {"code"} and set(data.val_sources) == {"val"}
    assert "stdlib corpus:" in lines[0] and config.corpus is None
    manifest = json.loads((tmp_path / "data" / "stdlib" / "data.json").read_text())
    assert manifest["vocab_size"] == 512 and manifest["tokens"]["code"] > 1_000_000
    assert len(downstream_task("code_cloze").samples(Path(config.downstream.data_dir))) > 100
    again = []
    assert with_corpus_data(micro_config(tmp_path, corpus="stdlib"), log=again.append).train.data == data
    assert again == []
    with pytest.raises(HerdError, match="unknown corpus 'web'; choose from: stdlib, micro"):
        with_corpus_data(micro_config(tmp_path, corpus="web"))
