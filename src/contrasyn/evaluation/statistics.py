"""How methods are compared over a benchmark: the classes are fixed, the seeds are replicates.

A benchmark is a fixed set of tasks (one per normal class); what it asks is how a method does
on *these* tasks, not on a population of tasks the classes were drawn from. What varies from
run to run is the seed (the training subsample, the initialisation, the augmentations). So
every comparison uses one model (docs/METHOD.md, "Comparing methods"):

    y[c, s] = mu_c + e[c, s],   e[c, s] independent, mean 0, variance sigma^2,

for class c and seed s, where y is a method's AUROC (``summarise``) or the paired difference
A - B of two methods on the same cell (``compare``: same class and seed, so the same training
subsample and validation split). The estimate is the mean over classes of the per-class
means, ``mean_c ybar_c``; sigma^2 is estimated by the pooled within-class variance of the
replicates,

    s_p^2 = sum_c sum_s (y[c, s] - ybar_c)^2 / df,   df = sum_c (n_c - 1),

so the class-to-class spread (fixed, part of the estimand) never enters the error; the
variance of the estimate is ``s_p^2 / C^2 * sum_c 1 / n_c``, and the 95% interval is
Student's t with ``df`` degrees of freedom. A class's own mean gets the same pooled ``s_p``
(``s_p / sqrt(n_c)``, ``df`` degrees of freedom): with three seeds a class has 2 degrees of
freedom of its own, too few to trust alone. With one seed per class (``df = 0``) there is no
estimate of sigma and no interval: the estimate is given alone and says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

Cells = Mapping[tuple[int, int], float]  # (class, seed) -> value

LEVEL = 0.95


class Estimate(NamedTuple):
    """A mean over classes with its interval; ``low``/``high`` are None when ``df`` is 0."""

    mean: float
    low: float | None
    high: float | None
    df: int  # pooled within-class degrees of freedom: sum over classes of (seeds - 1)
    classes: int
    cells: int

    @property
    def has_interval(self) -> bool:
        return self.low is not None

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or wholly below zero (a difference's
        verdict); False without an interval."""
        return self.has_interval and (self.low > 0 or self.high < 0)

    def text(self, fmt: str = ".4f") -> str:
        if not self.has_interval:
            return f"{self.mean:{fmt}} (one seed: no interval)"
        return f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


class Comparison(NamedTuple):
    """A - B over the cells both have: the mean over classes, each class's mean (both with the
    pooled interval), and the classes where A's mean over seeds is higher."""

    overall: Estimate
    per_class: dict[int, Estimate]
    wins: int

    @property
    def classes(self) -> int:
        return len(self.per_class)


def _by_class(cells: Cells) -> dict[int, np.ndarray]:
    groups: dict[int, list[float]] = {}
    for (c, _), value in sorted(cells.items()):
        groups.setdefault(c, []).append(float(value))
    return {c: np.asarray(v) for c, v in groups.items()}


def _pooled(groups: dict[int, np.ndarray]) -> tuple[float, int]:
    """The pooled within-class variance and its degrees of freedom (nan, 0 without any)."""
    df = sum(len(v) - 1 for v in groups.values())
    if df == 0:
        return math.nan, 0
    ss = sum(float(((v - v.mean()) ** 2).sum()) for v in groups.values())
    return ss / df, df


def _estimate(mean: float, var: float, df: int, classes: int, cells: int) -> Estimate:
    if df == 0:
        return Estimate(mean, None, None, 0, classes, cells)
    from scipy.stats import t

    half = float(t.ppf(0.5 + LEVEL / 2, df)) * math.sqrt(var)
    return Estimate(mean, mean - half, mean + half, df, classes, cells)


def _fit(cells: Cells) -> tuple[dict[int, np.ndarray], float, int]:
    groups = _by_class(cells)
    if not groups:
        raise ValueError("no cells to summarise")
    var, df = _pooled(groups)
    return groups, var, df


def summarise(cells: Cells) -> Estimate:
    """The mean over classes of the per-class means of ``cells`` with its 95% interval
    (module docstring)."""
    groups, var, df = _fit(cells)
    means = [float(v.mean()) for v in groups.values()]
    c = len(groups)
    var_mean = var / c**2 * sum(1 / len(v) for v in groups.values())
    return _estimate(float(np.mean(means)), var_mean, df, c, len(cells))


def compare(a: Cells, b: Cells) -> Comparison | None:
    """Paired differences ``a - b`` over the (class, seed) cells both have (None if none)."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    diffs = {cell: float(a[cell]) - float(b[cell]) for cell in common}
    groups, var, df = _fit(diffs)
    per_class = {
        c: _estimate(float(v.mean()), var / len(v), df, 1, len(v)) for c, v in groups.items()
    }
    wins = sum(e.mean > 0 for e in per_class.values())
    return Comparison(summarise(diffs), per_class, wins)
