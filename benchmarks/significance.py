"""Is a difference between two small groups of runs (seeds) more than seed noise?

Two answers, because with three runs a side neither is enough alone:
- Welch's t test (unequal variances, Welch-Satterthwaite degrees of freedom): assumes each
  group's figures are normal around its mean;
- the exact permutation test: assumes nothing, but three runs against three can be split only
  20 ways, so its two-sided p is never below 2/20 = 0.1.
"""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df >= 1 degrees of freedom (df need not be whole).

    With t = sqrt(df) tan(theta) the density becomes proportional to cos(theta)^(df - 1), which
    is bounded on [0, pi/2] for df >= 1: a plain Simpson sum is exact to rounding for whole df
    and within 1e-8 otherwise (measured against 100 times the steps).
    """
    if df < 1:
        raise ValueError(f"df must be at least 1, not {df}")
    theta0 = math.atan(abs(t) / math.sqrt(df))
    return _cos_power_integral(theta0, df - 1) / _cos_power_integral(0.0, df - 1)


def _cos_power_integral(start: float, power: float, steps: int = 20_000) -> float:
    theta = np.linspace(start, math.pi / 2, steps + 1)
    f = np.cos(theta) ** power
    f[-1] = 0.0 if power > 0 else 1.0  # cos(pi/2) is 6e-17 in floating point, not 0
    h = (math.pi / 2 - start) / steps
    return float(h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))


def welch(a: list[float], b: list[float]) -> dict:
    """mean(a) - mean(b), its standard error, t, degrees of freedom and two-sided p."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(va + vb)
    if se == 0:  # both groups constant: any difference is certain, none is none
        t = 0.0 if difference == 0 else math.copysign(math.inf, difference)
        return {"difference": difference, "se": 0.0, "t": t, "df": len(a) + len(b) - 2,
                "p": 1.0 if difference == 0 else 0.0}  # fmt: skip
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = difference / se
    return {"difference": difference, "se": se, "t": t, "df": df, "p": t_two_sided_p(t, df)}


def permutation_p(a: list[float], b: list[float]) -> dict:
    """Exact two-sided permutation test of the difference of means: every split of the runs."""
    pooled, n = [*a, *b], len(a)
    observed = abs(statistics.fmean(a) - statistics.fmean(b))
    splits = extreme = 0
    for chosen in itertools.combinations(range(len(pooled)), n):
        rest = [x for i, x in enumerate(pooled) if i not in chosen]
        gap = abs(statistics.fmean(pooled[i] for i in chosen) - statistics.fmean(rest))
        splits += 1
        extreme += gap >= observed - 1e-12  # ties count as at least as extreme
    # A split and its mirror image give the same gap when the groups are the same size.
    smallest = (2 if len(a) == len(b) else 1) / splits
    return {"p": extreme / splits, "splits": splits, "smallest_possible_p": smallest}
