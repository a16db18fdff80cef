"""The fits behind scaling laws, on plain arrays (numpy / scipy; no training code here).

- `fit_isoflop`: one compute budget's runs, loss against log model size, a parabola whose minimum is the
  loss-optimal size for that budget (Chinchilla's approach 2; Llama 3's isoFLOP curves).
- `fit_power_law`: y = A * x^alpha by least squares in log-log space (N*(C), D*(C), downstream NLL(C)).
- `fit_loss_surface`: L(N, D) = E + A / N^a + B / D^b (Chinchilla's approach 3), Huber loss on log L from a grid
  of starting points, as Hoffmann et al. fit it.
- `fit_sigmoid`: accuracy against normalised NLL, a logistic from the chance floor to a ceiling (Llama 3's second
  step of downstream prediction).
- `bootstrap`: percentile intervals of any fit's prediction, resampling the points.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize

from herd.errors import HerdError


@dataclass(frozen=True)
class IsoFlopFit:
    """loss = a * (ln N)^2 + b * ln N + c around one budget's optimum."""

    a: float
    b: float
    c: float

    @property
    def n_opt(self) -> float:
        return math.exp(-self.b / (2 * self.a))

    @property
    def loss_opt(self) -> float:
        return self.loss(self.n_opt)

    def loss(self, n: float | np.ndarray) -> float | np.ndarray:
        x = np.log(n)
        return self.a * x * x + self.b * x + self.c


def fit_isoflop(n: Sequence[float], loss: Sequence[float], *, bracketed: bool = False) -> IsoFlopFit:
    """The parabola in ln N through one budget's (model size, final loss) points; needs >= 3 sizes and a minimum,
    and with `bracketed` a minimum between the smallest and largest size (not extrapolated past the points)."""
    if len(n) < 3:
        raise HerdError(f"an isoFLOP fit needs at least 3 model sizes per budget, got {len(n)}")
    a, b, c = np.polyfit(np.log(np.asarray(n, float)), np.asarray(loss, float), 2)
    if a <= 0:
        raise HerdError("the isoFLOP points have no minimum (loss keeps falling or rising with size); "
                        "add smaller and larger models around the optimum")
    fit = IsoFlopFit(float(a), float(b), float(c))
    if bracketed and not min(n) <= fit.n_opt <= max(n):
        raise HerdError(f"the isoFLOP minimum N = {fit.n_opt:.3g} lies outside the sizes run "
                        f"[{min(n):.3g}, {max(n):.3g}]; add models on that side")
    return fit


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * x^exponent."""

    coefficient: float
    exponent: float

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.coefficient * np.power(x, self.exponent)


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Least squares of ln y on ln x; needs >= 2 positive points."""
    x_arr, y_arr = np.asarray(x, float), np.asarray(y, float)
    if len(x_arr) < 2 or (x_arr <= 0).any() or (y_arr <= 0).any():
        raise HerdError(f"a power-law fit needs at least 2 points with positive x and y, got {len(x_arr)}")
    exponent, log_coefficient = np.polyfit(np.log(x_arr), np.log(y_arr), 1)
    return PowerLaw(float(math.exp(log_coefficient)), float(exponent))


@dataclass(frozen=True)
class LossSurface:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __call__(self, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    def optimal_split(self, compute: float) -> tuple[float, float]:
        """(N, D) minimising L under C = 6 N D: Chinchilla's closed form."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        n = g * (compute / 6) ** (b / (a + b))
        return n, compute / (6 * n)


def fit_loss_surface(
    n: Sequence[float], d: Sequence[float], loss: Sequence[float], *, huber_delta: float = 1e-3,
    start: LossSurface | None = None,
) -> LossSurface:
    """Huber loss between log-sum-exp predictions and ln L, minimised by BFGS from a grid of starts (Hoffmann et
    al., 2022), or from `start` alone (bootstrap refits); the fit in (e, a, b) = ln(E, A, B) keeps the terms
    positive. Needs >= 5 runs."""
    ln_n, ln_d, ln_l = np.log(np.asarray(n, float)), np.log(np.asarray(d, float)), np.log(np.asarray(loss, float))
    if len(ln_l) < 5:
        raise HerdError(f"a loss-surface fit has 5 parameters and needs at least 5 runs, got {len(ln_l)}")

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        e, a, b, alpha, beta = p
        terms = np.stack([np.full_like(ln_n, e), a - alpha * ln_n, b - beta * ln_d])
        predicted = np.logaddexp.reduce(terms, axis=0)
        r = predicted - ln_l
        small = np.abs(r) <= huber_delta
        value = np.sum(np.where(small, 0.5 * r * r, huber_delta * (np.abs(r) - 0.5 * huber_delta)))
        slope = np.where(small, r, huber_delta * np.sign(r)) * np.exp(terms - predicted)  # d/d(each term)
        grad = np.array([slope[0].sum(), slope[1].sum(), slope[2].sum(), -(slope[1] * ln_n).sum(), -(slope[2] * ln_d).sum()])
        return float(value), grad

    floor = float(ln_l.min())
    starts = [(*(math.log(max(v, 1e-300)) for v in (start.E, start.A, start.B)), start.alpha, start.beta)] if start else \
        itertools.product((floor - 1.0, floor - 0.2), (0.0, 5.0, 10.0), (0.0, 5.0, 10.0), (0.2, 0.5), (0.2, 0.5))
    best = None
    for point in starts:
        result = optimize.minimize(objective, np.array(point, float), jac=True, method="BFGS")
        if best is None or result.fun < best.fun:
            best = result
    e, a, b, alpha, beta = best.x
    return LossSurface(math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta))


@dataclass(frozen=True)
class Sigmoid:
    """accuracy = floor + (ceiling - floor) / (1 + exp(slope * (nll - midpoint)))."""

    floor: float
    ceiling: float
    slope: float
    midpoint: float

    def __call__(self, nll: float | np.ndarray) -> float | np.ndarray:
        z = np.clip(self.slope * (np.asarray(nll, float) - self.midpoint), -60, 60)
        return self.floor + (self.ceiling - self.floor) / (1 + np.exp(z))


def fit_sigmoid(nll: Sequence[float], accuracy: Sequence[float], *, floor: float, fit_ceiling: bool = False) -> Sigmoid:
    """The logistic from `floor` (chance accuracy) up to 1 (or a fitted ceiling) as NLL falls; needs >= 3 points."""
    x, y = np.asarray(nll, float), np.asarray(accuracy, float)
    if len(x) < 3:
        raise HerdError(f"a sigmoid fit needs at least 3 (NLL, accuracy) points, got {len(x)}")
    spread = max(float(np.ptp(x)), 1e-3)

    def curve(nll_values: np.ndarray, slope: float, midpoint: float, ceiling: float = 1.0) -> np.ndarray:
        return Sigmoid(floor, ceiling, slope, midpoint)(nll_values)

    start = [4.0 / spread, float(np.median(x))] + ([min(1.0, float(y.max()) + 0.05)] if fit_ceiling else [])
    lower = [1e-6, float(x.min()) - 10 * spread] + ([floor] if fit_ceiling else [])
    upper = [1e4, float(x.max()) + 10 * spread] + ([1.0] if fit_ceiling else [])
    params, _ = optimize.curve_fit(curve, x, y, p0=start, bounds=(lower, upper), maxfev=20000)
    return Sigmoid(floor, float(params[2]) if fit_ceiling else 1.0, float(params[0]), float(params[1]))


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap percentile interval."""

    value: float
    low: float
    high: float
    level: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def bootstrap(
    groups: Sequence[Sequence[int]], estimate: Callable[[list[int]], float], *, samples: int = 200, level: float = 0.9,
    seed: int = 0,
) -> Interval:
    """`estimate` on all point indices, with a percentile interval from refitting on resamples drawn with
    replacement within each group (e.g. within each budget, so every budget keeps its points); resamples whose
    fit fails are dropped."""
    rng = np.random.default_rng(seed)
    value = estimate([i for group in groups for i in group])
    draws = []
    for _ in range(samples):
        picked = [int(i) for group in groups for i in rng.choice(np.asarray(group), size=len(group), replace=True)]
        try:
            draws.append(estimate(picked))
        except (HerdError, RuntimeError, ValueError, OverflowError, np.linalg.LinAlgError):
            continue
    if not draws:
        return Interval(value, value, value, level)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(value), float(low), float(high), level)


__all__ = [
    "Interval", "IsoFlopFit", "LossSurface", "PowerLaw", "Sigmoid", "bootstrap", "fit_isoflop", "fit_loss_surface",
    "fit_power_law", "fit_sigmoid",
]
