"""`herd scaling sweep | fit | predict | mix`: the steps of a scaling study, each resumable and each writing its
results into the sweep directory.

- sweep: plan the (budget, model) runs, train and score each (skipping finished ones), then fit and report;
- fit: refit and redraw from the finished runs (results.jsonl, fits.json, report.md, PNGs);
- predict: N*, D*, the loss and downstream scores at a target budget; with `train`, also train the ladder model
  nearest N* on that budget and put predicted and measured side by side (prediction.json, the report);
- mix: train small models on each candidate data mix at the sweep's budgets, fit each mix's downstream NLL against
  compute, predict it at the target budget and pick the mix with the best predicted score (mix.json, mix.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from herd.config_overrides import apply_overrides, from_dict, read_config_file, to_dict
from herd.errors import HerdError
from herd.run_dir import write_json, write_text
from herd.scaling.analysis import field_value, fit_accuracy, fit_sweep, frontier_law, isoflop_fits, predict
from herd.scaling.config import ScalingConfig
from herd.scaling.fits import Sigmoid, fit_power_law
from herd.scaling.plan import data_tokens, plan_run, plan_sweep
from herd.scaling.presets import preset, with_corpus_data
from herd.scaling.report import plot_downstream, plot_frontier, plot_isoflops, render_report
from herd.scaling.runs import run_sweep_runs, train_and_score

Log = Callable[[str], None]


def load_scaling_config(path: str | Path | None = None, overrides: Sequence[str] = (), *, preset_name: str | None = None) -> ScalingConfig:
    """A preset's config (if named), with the file's settings, then `key=value` overrides, on top."""
    data = apply_overrides(read_config_file(path) if path is not None else {}, overrides)
    return from_dict(ScalingConfig, data, base=preset(preset_name) if preset_name else None)


def sweep(config: ScalingConfig, log: Log = print) -> dict[str, Any]:
    """Train every planned run not finished yet, then fit and report; returns the fits."""
    config = with_corpus_data(config, log)
    runs, skipped = plan_sweep(config)
    for line in skipped:
        log(f"[scaling] left out {line}")
    if not runs:
        raise HerdError("no (budget, model) pair fits min_steps and max_epochs; raise the budgets or add smaller models")
    _write_json(config.run_dir / "plan.json", {"config": to_dict(config), "runs": [r.as_dict() for r in runs],
                                              "skipped": skipped})
    records = run_sweep_runs(config, runs, log)
    _write_jsonl(config.run_dir / "results.jsonl", records)
    return fit(config, log)


def fit(config: ScalingConfig, log: Log = print) -> dict[str, Any]:
    """Fit the finished runs and write fits.json, report.md and the plots (with the prediction, when one exists)."""
    records, skipped = _records(config)
    fits = fit_sweep(records, samples=config.bootstrap_samples)
    _write_json(config.run_dir / "fits.json", fits)
    saved = config.run_dir / "prediction.json"
    prediction = json.loads(saved.read_text()) if saved.is_file() else None
    _write_report(config, records, skipped, fits, prediction)
    law = fits["n_opt_law"]
    found = f"N*(C) = {law['coefficient']:.3g} C^{law['exponent']:.3f}" if law else fits["frontier_error"]
    log(f"[scaling] {found}; report: {config.run_dir / 'report.md'}")
    return fits


def predict_target(config: ScalingConfig, budget: float | None = None, *, train: bool = False, log: Log = print) -> dict[str, Any]:
    """Predict the target budget's loss and downstream scores for the ladder model nearest N* among those the data
    holds (max_epochs); with `train`, train that run and record the measurement next to the prediction."""
    config = with_corpus_data(config, log)
    budget = budget or config.target_budget
    if budget is None:
        raise HerdError("no target budget: pass --budget FLOPS or set target_budget in the config")
    records, skipped = _records(config)
    fits = fit_sweep(records, samples=config.bootstrap_samples)
    n_opt = float(frontier_law(fits)(budget))
    ladder = {**config.models, **config.target_models}
    vocab, epoch = data_tokens(config.pretrain_config("probe", steps=1))
    candidates = [plan_run(config, budget, name, fields, vocab=vocab, name=f"target-{name}-C{budget:.2e}".replace("+", ""))
                  for name, fields in ladder.items()]
    fitting = [r for r in candidates if r.tokens <= config.max_epochs * epoch]
    if not fitting:
        raise HerdError(f"every ladder model needs more than max_epochs={config.max_epochs} x {epoch:,} tokens at "
                        f"C = {budget:.3g}; add larger target_models or more data")
    run = min(fitting, key=lambda r: abs(math.log(r.compute_params / n_opt)))
    prediction = predict(records, fits, run.flops, n=run.compute_params, d=run.tokens, samples=config.bootstrap_samples)
    prediction["run"] = run.as_dict()
    log(f"[scaling] C = {budget:.3g}: N* = {n_opt:.3g}; nearest ladder model {run.model} (N = {run.compute_params:.3g}, "
        f"{run.steps} steps, D = {run.tokens:,}); predicted val loss {prediction['loss']['value']:.4f} "
        f"[{prediction['loss']['low']:.4f}, {prediction['loss']['high']:.4f}]")
    if train:
        measured = train_and_score(config, run)
        prediction["measured"] = measured
        error = abs(prediction["loss"]["value"] - measured["val_loss"]) / measured["val_loss"]
        prediction["loss_relative_error"] = error
        log(f"[scaling] measured val loss {measured['val_loss']:.4f}: relative error {error:.2%}")
    _write_json(config.run_dir / "prediction.json", prediction)
    _write_report(config, records, skipped, fits, prediction)
    return prediction


def mix(config: ScalingConfig, budget: float | None = None, log: Log = print) -> dict[str, Any]:
    """Data-mix experiments: every mix in `mixes` x every budget x every ladder model; per mix, the first downstream
    task's compute-optimal NLL against compute (a power law), predicted at the target budget and turned into
    accuracy by the sigmoid fitted over all mix runs; the mix with the best predicted score wins."""
    config = with_corpus_data(config, log)
    if not config.mixes or not config.downstream.tasks:
        raise HerdError("mix experiments need mixes (name -> {source: weight}) and at least one downstream task")
    budget = budget or config.target_budget
    if budget is None:
        raise HerdError("no target budget: pass --budget FLOPS or set target_budget in the config")
    runs, skipped = plan_sweep(config, list(config.mixes))
    records = run_sweep_runs(config, runs, log)
    task = config.downstream.tasks[0]
    key = f"downstream.{task}.nll"
    try:
        sigmoid: Sigmoid | None = fit_accuracy(records, task)
    except HerdError as e:
        log(f"[scaling] {e}; choosing the mix by predicted NLL")
        sigmoid = None
    table = {}
    for name in config.mixes:
        mine = [r for r in records if r["mix"] == name]
        best = _best_per_budget(mine, key)
        law = fit_power_law(list(best), list(best.values()))
        nll = float(law(budget))
        table[name] = {"weights": config.mixes[name], "frontier": best, "nll_law": vars(law), "predicted_nll": nll,
                       "predicted_acc": float(sigmoid(nll)) if sigmoid else None}
    score = (lambda m: table[m]["predicted_acc"]) if sigmoid else (lambda m: -table[m]["predicted_nll"])
    chosen = max(table, key=score)
    result = {"task": task, "budget": budget, "mixes": table, "chosen": chosen, "skipped": skipped}
    _write_json(config.run_dir / "mix.json", result)
    write_text(config.run_dir / "mix.md", _mix_markdown(result))
    log(f"[scaling] chosen mix: {chosen} ({config.run_dir / 'mix.md'})")
    return result


def _best_per_budget(records: list[dict[str, Any]], key: str) -> dict[float, float]:
    """Budget -> the lowest `key` of that budget's runs (the parabola's minimum when >= 3 sizes give one)."""
    iso = isoflop_fits(records, key)
    out = {}
    for budget in sorted({r["budget"] for r in records}):
        lowest = min(field_value(r, key) for r in records if r["budget"] == budget)
        out[budget] = min(iso[budget].loss_opt, lowest) if budget in iso else lowest
    if len(out) < 2:
        raise HerdError("a mix needs runs at 2 or more budgets to extrapolate; add budgets")
    return out


def _mix_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Data-mix experiments ({result['task']}, predicted at C = {result['budget']:.3g})", "",
             "| mix | weights | NLL law | predicted NLL | predicted accuracy |", "|---|---|---|---|---|"]
    for name, row in result["mixes"].items():
        weights = ", ".join(f"{k} {v:g}" for k, v in row["weights"].items())
        law = row["nll_law"]
        acc = f"{row['predicted_acc']:.3f}" if row["predicted_acc"] is not None else "-"
        mark = " (chosen)" if name == result["chosen"] else ""
        lines.append(f"| {name}{mark} | {weights} | {law['coefficient']:.3g} C^{law['exponent']:.3f} | "
                     f"{row['predicted_nll']:.4f} | {acc} |")
    return "\n".join(lines) + "\n"


def _records(config: ScalingConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """The sweep's finished runs (from each run's scaling.json) and the pairs left out of its plan."""
    plan = config.run_dir / "plan.json"
    if not plan.is_file():
        raise HerdError(f"{config.run_dir} holds no sweep; run `herd scaling sweep` first")
    saved = json.loads(plan.read_text())
    records = []
    for run in saved["runs"]:
        path = config.run_dir / "runs" / run["name"] / "scaling.json"
        if path.is_file():
            records.append(json.loads(path.read_text()))
    if not records:
        raise HerdError(f"no finished runs in {config.run_dir / 'runs'}; run `herd scaling sweep` first")
    return records, saved["skipped"]


def _write_report(config: ScalingConfig, records: list[dict[str, Any]], skipped: list[str], fits: dict[str, Any],
                  prediction: dict[str, Any] | None) -> None:
    out = config.run_dir
    target = (prediction or {}).get("measured")
    plots = [plot_isoflops(records, fits, out / "isoflops.png", target),
             plot_frontier(records, fits, out / "frontier.png", prediction)]
    downstream = plot_downstream(records, fits, out / "downstream.png", prediction, target)
    plots += [downstream] if downstream else []
    write_text(out / "report.md", render_report(records, skipped, fits, prediction, target, plots))


def _write_json(path: Path, value: Any) -> None:
    write_json(path, value, indent=1, default=str)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


__all__ = ["fit", "load_scaling_config", "mix", "predict_target", "sweep"]
