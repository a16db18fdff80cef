"""The scaling report: report.md (runs, fits, the target prediction against its measurement) and PNG plots
(isoFLOP curves, the fitted frontier, downstream NLL against compute and the NLL -> accuracy sigmoid)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from herd.scaling.analysis import isoflop_fits, relative_error
from herd.scaling.fits import PowerLaw, Sigmoid

Record = dict[str, Any]


def plot_isoflops(records: Sequence[Record], fits: dict[str, Any], out: Path, target: Record | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len({r["budget"] for r in records})))
    iso = isoflop_fits(records)
    minima = {b["budget"]: b for b in fits["budgets"]}  # the frontier's bracketed minima
    for color, budget in zip(colors, sorted({r["budget"] for r in records})):
        mine = sorted((r for r in records if r["budget"] == budget), key=lambda r: r["compute_params"])
        n = [r["compute_params"] for r in mine]
        ax.plot(n, [r["val_loss"] for r in mine], "o", color=color, label=f"C = {budget:.2g}")
        if budget in iso:
            grid = np.geomspace(min(n), max(n), 60)
            ax.plot(grid, iso[budget].loss(grid), "-", color=color, alpha=0.7)
        if budget in minima:
            best = minima[budget]
            ax.plot(best["n_opt"], best["loss_opt"], "*", color=color, markersize=13, markeredgecolor="k")
    if target is not None:
        ax.plot(target["compute_params"], target["val_loss"], "D", color="tab:red",
                label=f"held-out C = {target['budget']:.2g} (measured)")
    ax.set(xscale="log", xlabel="compute parameters N (training FLOPs per token / 6)", ylabel="final validation loss",
           title="isoFLOP curves (stars: loss-optimal N, where the runs bracket it)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_frontier(records: Sequence[Record], fits: dict[str, Any], out: Path,
                  prediction: dict[str, Any] | None = None) -> Path:
    """N* and D* against C: the bracketed isoFLOP minima, each other budget's lowest-loss run (hollow: its minimum
    lies outside the sizes run), and the fitted laws when the sweep located a frontier."""
    fig, (n_ax, d_ax) = plt.subplots(1, 2, figsize=(10, 4))
    minima = fits["budgets"]
    lowest = [min((r for r in records if r["budget"] == b), key=lambda r: r["val_loss"])
              for b in sorted({r["budget"] for r in records} - {m["budget"] for m in minima})]
    ends = [r["budget"] for r in records] + ([prediction["budget"]] if prediction else [])
    grid = np.geomspace(min(ends), max(ends), 50)
    for ax, key, run_key, law_key, label in ((n_ax, "n_opt", "compute_params", "n_opt_law", "N*"),
                                             (d_ax, "d_opt", "tokens", "d_opt_law", "D* (tokens)")):
        if minima:
            ax.plot([b["budget"] for b in minima], [b[key] for b in minima], "o", label="isoFLOP minima")
        if lowest:
            ax.plot([r["budget"] for r in lowest], [r[run_key] for r in lowest], "o", mfc="none",
                    label="lowest-loss run (minimum not bracketed)")
        if fits[law_key]:
            law = PowerLaw(fits[law_key]["coefficient"], fits[law_key]["exponent"])
            ax.plot(grid, law(grid), "-", label=f"{label} = {law.coefficient:.3g} C^{law.exponent:.3f}")
        if prediction:
            value = prediction["n_opt"]["value"] if key == "n_opt" else prediction["d_opt"]
            ax.plot(prediction["budget"], value, "*", color="tab:red", markersize=14, label="target budget")
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel=label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("compute-optimal model size and data" if fits["n_opt_law"] else
                 "no frontier: no budget's loss minimum is bracketed by the sizes run (see report.md)")
    return _save(fig, out)


def plot_downstream(records: Sequence[Record], fits: dict[str, Any], out: Path, prediction: dict[str, Any] | None = None,
                    target: Record | None = None) -> Path | None:
    tasks = [t for t, f in fits["downstream"].items() if "nll_law" in f or "sigmoid" in f]
    if not tasks:
        return None
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 4 * len(tasks)), squeeze=False)
    for (nll_ax, acc_ax), task in zip(axes, tasks):
        fit = fits["downstream"][task]
        frontier = fit["frontier"]
        nll_ax.plot([r["budget"] for r in records], [r["downstream"][task]["nll"] for r in records], ".", color="0.6",
                    label="sweep runs")
        if "nll_law" in fit:
            law = PowerLaw(**fit["nll_law"])
            budgets = [f["budget"] for f in frontier] + ([prediction["budget"]] if prediction else [])
            grid = np.geomspace(min(budgets), max(budgets), 50)
            nll_ax.plot([f["budget"] for f in frontier], [f["nll"] for f in frontier], "o", label="compute-optimal NLL")
            nll_ax.plot(grid, law(grid), "-", label=f"NLL = {law.coefficient:.3g} C^{law.exponent:.3f}")
        nlls = [r["downstream"][task]["nll"] for r in records]
        accs = [r["downstream"][task]["acc"] for r in records]
        acc_ax.plot(nlls, accs, "o", alpha=0.6, label="sweep runs")
        if "sigmoid" in fit:
            span = np.linspace(min(nlls) - 0.3 * np.ptp(nlls), max(nlls) + 0.1 * np.ptp(nlls), 80)
            acc_ax.plot(span, Sigmoid(**fit["sigmoid"])(span), "-", label="sigmoid fit")
        predicted = (prediction or {}).get("downstream", {}).get(task)
        if predicted:
            nll_ax.plot(prediction["budget"], predicted["nll"], "*", color="tab:red", markersize=14, label="predicted")
            if "acc" in predicted:
                acc_ax.plot(predicted["nll"], predicted["acc"], "*", color="tab:red", markersize=14, label="predicted")
        if target and task in target.get("downstream", {}):
            measured = target["downstream"][task]
            nll_ax.plot(target["budget"], measured["nll"], "D", color="k", label="measured")
            acc_ax.plot(measured["nll"], measured["acc"], "D", color="k", label="measured")
        nll_ax.set(xscale="log", xlabel="training FLOPs C", ylabel="NLL of the correct answer (nats/char)", title=task)
        acc_ax.set(xlabel="NLL of the correct answer (nats/char)", ylabel="accuracy", title=f"{task}: accuracy from NLL")
        for ax in (nll_ax, acc_ax):
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
    return _save(fig, out)


def render_report(records: Sequence[Record], skipped: Sequence[str], fits: dict[str, Any],
                  prediction: dict[str, Any] | None = None, target: Record | None = None,
                  plots: Sequence[Path] = ()) -> str:
    lines = ["# Scaling laws", "", (f"{len(records)} runs; compute parameters N = training FLOPs per token / 6, "
             "C = 6 N D."), "", "## Runs", "",
             "| run | C | N | D (tokens) | steps | val loss |" + "".join(f" {t} NLL | {t} acc |" for t in _tasks(records)),
             "|---|---|---|---|---|---|" + "---|---|" * len(_tasks(records))]
    for r in sorted(records, key=lambda r: (r["budget"], r["compute_params"])):
        scores = "".join(f" {r['downstream'][t]['nll']:.4f} | {r['downstream'][t]['acc']:.3f} |" for t in _tasks(records))
        lines.append(f"| {r['name']} | {r['flops']:.3g} | {r['compute_params']:.3g} | {r['tokens']:,} | {r['steps']} | "
                     f"{r['val_loss']:.4f} |{scores}")
    if skipped:
        lines += ["", "Left out: " + "; ".join(skipped)]
    law, d_law, s = fits["n_opt_law"], fits["d_opt_law"], fits["surface"]
    lines += ["", "## Fits", "", "| budget C | N* | D* | loss at N* |", "|---|---|---|---|"]
    lines += [f"| {b['budget']:.3g} | {b['n_opt']:.3g} | {b['d_opt']:.3g} | {b['loss_opt']:.4f} |" for b in fits["budgets"]]
    if law:
        interval = law["exponent_interval"]
        lines += ["", (f"- N*(C) = {law['coefficient']:.3g} C^{law['exponent']:.3f} (exponent {interval['level']:.0%} "
                  f"interval [{interval['low']:.3f}, {interval['high']:.3f}]); D*(C) = {d_law['coefficient']:.3g} "
                  f"C^{d_law['exponent']:.3f}")]
    else:
        lines += ["", f"- No frontier N*(C): {fits['frontier_error']}."]
    lines.append(f"- L(N, D) = {s['E']:.3f} + {s['A']:.3g} / N^{s['alpha']:.3f} + {s['B']:.3g} / D^{s['beta']:.3f}")
    for task, fit in fits["downstream"].items():
        if "nll_law" in fit:
            lines.append(f"- {task}: compute-optimal NLL = {fit['nll_law']['coefficient']:.3g} C^{fit['nll_law']['exponent']:.3f}"
                         + (f"; accuracy = sigmoid(NLL): floor {fit['sigmoid']['floor']:.2f}, slope "
                            f"{fit['sigmoid']['slope']:.3g}, midpoint {fit['sigmoid']['midpoint']:.3f}" if "sigmoid" in fit else ""))
    if prediction:
        lines += _prediction_lines(prediction, target)
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    return "\n".join(lines) + "\n"


def _prediction_lines(prediction: dict[str, Any], target: Record | None) -> list[str]:
    loss, n_opt = prediction["loss"], prediction["n_opt"]
    lines = ["", f"## Prediction at C = {prediction['budget']:.3g}", "",
             (f"N* = {n_opt['value']:.3g} ({n_opt['level']:.0%} interval [{n_opt['low']:.3g}, {n_opt['high']:.3g}]), "
             f"D* = {prediction['d_opt']:.3g} tokens; the run: N = {prediction['n']:.3g}, D = {prediction['d']:.3g}."), "",
             "| quantity | predicted | interval | measured | relative error |", "|---|---|---|---|---|"]
    measured = target["val_loss"] if target else None
    lines.append(f"| validation loss | {loss['value']:.4f} | [{loss['low']:.4f}, {loss['high']:.4f}] | "
                 + (f"{measured:.4f} | {relative_error(loss['value'], measured):.2%} |" if target else "- | - |"))
    for task, entry in prediction["downstream"].items():
        got = (target or {}).get("downstream", {}).get(task)
        lines.append(f"| {task} NLL | {entry['nll']:.4f} | - | "
                     + (f"{got['nll']:.4f} | {relative_error(entry['nll'], got['nll']):.2%} |" if got else "- | - |"))
        if "acc" in entry:
            lines.append(f"| {task} accuracy | {entry['acc']:.3f} | - | " + (f"{got['acc']:.3f} | - |" if got else "- | - |"))
    return lines


def _tasks(records: Sequence[Record]) -> list[str]:
    return sorted({t for r in records for t in r.get("downstream", {})})


def _save(fig: Any, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


__all__ = ["plot_downstream", "plot_frontier", "plot_isoflops", "render_report"]
