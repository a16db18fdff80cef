"""From a sweep's records to scaling laws and predictions.

- per budget: the isoFLOP parabola of final validation loss in ln N and its minimum (N*, L*), D* = C / (6 N*);
- across budgets: N*(C) = A C^alpha and D*(C) = C / (6 N*(C)) (Llama 3's "optimal number of training tokens"),
  from the minima, or from the loss surface's closed form when only 1 budget has a minimum; none when no budget's
  minimum is bracketed by the sizes run (`frontier_error` then says which sizes to add);
- over every run: the loss surface L(N, D) = E + A/N^a + B/D^b, which predicts any (N, D) including a target run;
- downstream, per task (Llama 3's two steps): (1) the compute-optimal model's normalised NLL of the correct answer
  against compute, a power law (the NLL of each budget read off its own isoFLOP parabola at N*); (2) a sigmoid
  from NLL to accuracy over every run;
- predictions for a target budget with bootstrap intervals (resampling runs within each budget).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from herd.errors import HerdError
from herd.scaling.fits import (
    IsoFlopFit,
    LossSurface,
    PowerLaw,
    Sigmoid,
    bootstrap,
    fit_isoflop,
    fit_loss_surface,
    fit_power_law,
    fit_sigmoid,
)

Record = dict[str, Any]


def budget_groups(records: Sequence[Record]) -> list[list[int]]:
    """Indices of the records of each budget, smallest budget first."""
    budgets = sorted({r["budget"] for r in records})
    return [[i for i, r in enumerate(records) if r["budget"] == b] for b in budgets]


def isoflop_fits(records: Sequence[Record], key: str = "val_loss", indices: Sequence[int] | None = None, *,
                 bracketed: bool = False) -> dict[float, IsoFlopFit]:
    """Budget -> the parabola of `key` in ln N, for every budget with >= 3 sizes and a minimum (with `bracketed`,
    one inside the sizes run: the frontier takes only minima the runs surround)."""
    picked = [records[i] for i in (indices if indices is not None else range(len(records)))]
    fits = {}
    for budget in sorted({r["budget"] for r in picked}):
        mine = [r for r in picked if r["budget"] == budget]
        if len({r["compute_params"] for r in mine}) < 3:
            continue
        try:
            fits[budget] = fit_isoflop([r["compute_params"] for r in mine], [field_value(r, key) for r in mine],
                                       bracketed=bracketed)
        except HerdError:
            continue
    return fits


def fit_sweep(records: Sequence[Record], *, samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Every fit of the module docstring as JSON-ready values.

    The frontier N*(C) comes from the isoFLOP minima when at least 2 budgets have one (Chinchilla's approach 2),
    else from the loss surface's closed form (approach 3) when 1 has; `n_opt_law.source` says which. With no
    bracketed minimum the surface alone is an extrapolation past every run: `n_opt_law` and `d_opt_law` are None
    and `frontier_error` says which sizes to add.
    """
    records = list(records)
    groups = budget_groups(records)
    iso = isoflop_fits(records, bracketed=True)
    n_data, d_data, loss_data = _surface_data(records)
    surface = fit_loss_surface(n_data, d_data, loss_data)
    out: dict[str, Any] = {
        "budgets": [{"budget": b, "n_opt": f.n_opt, "d_opt": b / (6 * f.n_opt), "loss_opt": f.loss_opt,
                     "parabola": [f.a, f.b, f.c]} for b, f in iso.items()],
        "n_opt_law": None, "d_opt_law": None, "surface": vars(surface), "downstream": {},
    }
    if not iso:
        out["frontier_error"] = unbracketed(records)
        n_opt: dict[float, float] = {}
    else:
        if len(iso) >= 2:
            law, source = fit_power_law(list(iso), [f.n_opt for f in iso.values()]), "isoflop"
            exponent = bootstrap(groups, lambda idx: fit_power_law(*_frontier(records, idx)).exponent,
                                 samples=samples, seed=seed)
        else:
            law, source = _surface_frontier(surface), "surface"
            exponent = bootstrap(groups, lambda idx: _surface_frontier(fit_loss_surface(
                n_data[idx], d_data[idx], loss_data[idx], start=surface)).exponent, samples=samples, seed=seed)
        n_opt = {b: f.n_opt for b, f in iso.items()} if source == "isoflop" else \
            {b: float(law(b)) for b in sorted({r["budget"] for r in records})}
        out["n_opt_law"] = {"coefficient": law.coefficient, "exponent": law.exponent, "source": source,
                            "exponent_interval": exponent.as_dict()}
        out["d_opt_law"] = {"coefficient": 1 / (6 * law.coefficient), "exponent": 1 - law.exponent}
    for task in _tasks(records):
        out["downstream"][task] = _fit_downstream(records, task, n_opt)
    return out


def unbracketed(records: Sequence[Record]) -> str:
    """Why no budget has a bracketed loss minimum, in one line: per budget, where its lowest loss sits among the
    sizes run, and which sizes to add."""
    where, larger, smaller = [], [], []
    for budget in sorted({r["budget"] for r in records}):
        mine = sorted((r for r in records if r["budget"] == budget), key=lambda r: r["compute_params"])
        best = min(mine, key=lambda r: r["val_loss"])
        if len({r["compute_params"] for r in mine}) < 3:
            where.append(f"C = {budget:.3g}: {len(mine)} size(s) run, an isoFLOP curve needs 3")
            smaller.append(mine[0]["compute_params"])
            larger.append(mine[-1]["compute_params"])
        elif best is mine[-1]:
            where.append(f"C = {budget:.3g}: lowest loss at the largest size, {_size(best)}")
            larger.append(best["compute_params"])
        elif best is mine[0]:
            where.append(f"C = {budget:.3g}: lowest loss at the smallest size, {_size(best)}")
            smaller.append(best["compute_params"])
        else:
            where.append(f"C = {budget:.3g}: the losses around {_size(best)} have no clear minimum (noise)")
    add = ([f"models larger than N = {max(larger):.3g}"] if larger else []) + \
        ([f"models smaller than N = {min(smaller):.3g}"] if smaller else [])
    return (f"no budget's loss minimum is bracketed by the sizes run ({'; '.join(where)}); add "
            + (" and ".join(add) if add else "sizes around each budget's lowest loss")
            + " to locate the frontier")


def _size(record: Record) -> str:
    size = f"N = {record['compute_params']:.3g}"
    return f"{record['model']} ({size})" if record.get("model") else size


def frontier_law(fits: dict[str, Any]) -> PowerLaw:
    """N*(C) of a fit_sweep result; a HerdError saying why when the sweep located no frontier."""
    law = fits["n_opt_law"]
    if law is None:
        raise HerdError(f"cannot predict: {fits['frontier_error']}")
    return PowerLaw(law["coefficient"], law["exponent"])


def _surface_frontier(surface: LossSurface) -> PowerLaw:
    """N*(C) of the loss surface: Chinchilla's closed form G (C / 6)^(beta / (alpha + beta))."""
    exponent = surface.beta / (surface.alpha + surface.beta)
    n_at_six, _ = surface.optimal_split(6.0)
    return PowerLaw(n_at_six / 6.0**exponent, exponent)


def _fit_downstream(records: Sequence[Record], task: str, n_opt: dict[float, float]) -> dict[str, Any]:
    """Step 1: the NLL of each budget's compute-optimal model (its NLL parabola read at N*) against compute;
    step 2: accuracy against NLL."""
    key = f"downstream.{task}.nll"
    nll_iso = isoflop_fits(records, key)
    frontier = [(b, float(nll_iso[b].loss(n))) for b, n in n_opt.items() if b in nll_iso]
    out: dict[str, Any] = {"frontier": [{"budget": b, "nll": v} for b, v in frontier]}
    if len(frontier) >= 2:
        law = fit_power_law(*zip(*frontier))
        out["nll_law"] = {"coefficient": law.coefficient, "exponent": law.exponent}
    try:
        out["sigmoid"] = vars(fit_accuracy(records, task))
    except HerdError as e:
        out["sigmoid_error"] = str(e)
    return out


def fit_accuracy(records: Sequence[Record], task: str) -> Sigmoid:
    """Step 2: the sigmoid from `task`'s NLL of the correct answer to its accuracy, over every run, floored at chance."""
    chance = float(np.mean([field_value(r, f"downstream.{task}.chance") for r in records]))
    nll = [field_value(r, f"downstream.{task}.nll") for r in records]
    accuracy = [field_value(r, f"downstream.{task}.acc") for r in records]
    try:
        return fit_sigmoid(nll, accuracy, floor=chance)
    except RuntimeError as e:  # curve_fit found no optimum
        raise HerdError(f"the {task} sigmoid fit did not converge: {e}") from None


def predict(records: Sequence[Record], fits: dict[str, Any], budget: float, *, n: float | None = None,
            d: float | None = None, samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Predictions at `budget`: N*, D*, the loss of a run of (n, d) (default: the compute-optimal split), and per
    downstream task the NLL and accuracy; with bootstrap intervals."""
    records = list(records)
    groups = budget_groups(records)
    law = frontier_law(fits)
    n_opt = float(law(budget))
    n = n or n_opt
    d = d or budget / (6 * n)
    surface = LossSurface(**fits["surface"])
    n_data, d_data, loss_data = _surface_data(records)
    if fits["n_opt_law"]["source"] == "isoflop":
        def frontier(idx: list[int]) -> PowerLaw:
            return fit_power_law(*_frontier(records, idx))
    else:
        def frontier(idx: list[int]) -> PowerLaw:
            return _surface_frontier(fit_loss_surface(n_data[idx], d_data[idx], loss_data[idx], start=surface))

    def surface_at(idx: list[int]) -> float:
        refit = fit_loss_surface(n_data[idx], d_data[idx], loss_data[idx], start=surface)
        return float(refit(n, d))

    def n_opt_at(idx: list[int]) -> float:
        return float(frontier(idx)(budget))

    out: dict[str, Any] = {
        "budget": budget, "n": n, "d": d,
        "n_opt": bootstrap(groups, n_opt_at, samples=samples, seed=seed).as_dict(),
        "d_opt": budget / (6 * n_opt),
        "loss": bootstrap(groups, surface_at, samples=samples, seed=seed).as_dict(),
        "downstream": {},
    }
    for task, fit in fits["downstream"].items():
        if "nll_law" not in fit:
            continue
        nll = float(PowerLaw(**fit["nll_law"])(budget))
        entry: dict[str, Any] = {"nll": nll}
        if "sigmoid" in fit:
            entry["acc"] = float(Sigmoid(**fit["sigmoid"])(nll))
        out["downstream"][task] = entry
    return out


def _frontier(records: Sequence[Record], indices: Sequence[int]) -> tuple[list[float], list[float]]:
    iso = isoflop_fits(records, indices=indices, bracketed=True)
    if len(iso) < 2:
        raise HerdError("fewer than 2 budgets with a minimum")
    return list(iso), [f.n_opt for f in iso.values()]


def _surface_data(records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([r["compute_params"] for r in records], float), np.array([r["tokens"] for r in records], float),
            np.array([r["val_loss"] for r in records], float))


def _tasks(records: Sequence[Record]) -> list[str]:
    return sorted({task for r in records for task in r.get("downstream", {})})


def field_value(record: Record, key: str) -> float:
    """A record's number at a dotted key, e.g. downstream.mmlu.nll."""
    value: Any = record
    for part in key.split("."):
        value = value[part]
    return float(value)


def relative_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / abs(measured) if measured else math.inf


__all__ = ["budget_groups", "field_value", "fit_accuracy", "fit_sweep", "frontier_law", "isoflop_fits", "predict",
           "relative_error", "unbracketed"]
