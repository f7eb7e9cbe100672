"""Fragility: how often a verdict comes out again when the study's seeds are redrawn.

Each verdict (inconclusive ones included) carries ``holds``: the share of seed-bootstrap
resamples of the study in which the same verdict comes out. A resample redraws the values of each
side within each counted stratum with replacement, then recomputes the statistic, its interval and
the verdict (the C4 precondition included). Two choices keep that honest and cheap:

- The redrawn deviations from their side's mean are scaled by sqrt(n / (n - 1)). A plain
  bootstrap of n values has on average (n - 1)/n of their variance: with 2-3 seeds its intervals
  come out a fifth to a third narrower than the study's, and a verdict at a margin looks surer
  than it is (two thirds of the resamples instead of half, tests/report/test_fragility.py).
  Scaled, a resample's mean varies by the estimated standard error and its interval is as wide
  as the study's on average.
- A resample's interval is the Welch interval only. Nesting the 2000-resample bootstrap in each of
  N_RESAMPLES resamples would cost 2,000,000 resamples per claim; with a handful of seeds the Welch
  interval is the wider of the two (its t quantile and n - 1 divisor), so the hull it replaces is
  the Welch interval already (it contains the bootstrap interval in every row of both committed
  studies). Resampling costs about 0.4 CPU s per 10,000-run study (bench/bench_report.py).

Leave-one-seed-out was the alternative: with 3 seeds it gives three perturbations (shares of 0,
33, 67 or 100%), and each leaves 2 seeds, whose t intervals are several times wider: it measures
what fewer seeds would conclude, not what another run of the same study would. A verdict that
holds in under FRAGILE_BELOW of the resamples is marked fragile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from suite.report.claims.rules import INCONCLUSIVE, Test, interval_verdicts
from suite.report.stats import welch_bounds

# 1000 resamples put a share near 80% within about ±1.3 points (its Monte Carlo standard error).
N_RESAMPLES = 1000
FRAGILE_BELOW = 0.80

_CHUNK = 1 << 21  # values redrawn at once: bounds the memory of a 10,000-run study's resamples


def _redraw(x: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Means and variances (ddof 1) of n redraws with replacement of each row of x (strata of
    one side, all with the same run count m), deviations from the row's mean scaled by
    sqrt(m / (m - 1)) so that a redraw is on average as spread as the row (module docstring)."""
    s, m = x.shape
    picks = x[np.arange(s)[:, None, None], rng.integers(0, m, size=(s, n, m))]
    centre = x.mean(axis=1)[:, None]
    scale = m / (m - 1)
    return centre + (picks.mean(axis=2) - centre) * math.sqrt(scale), \
        picks.var(axis=2, ddof=1) * scale


def verdict_holds(
    groups: Sequence[tuple[np.ndarray, np.ndarray]], test: Test, verdict: str, *,
    n_resamples: int = N_RESAMPLES, seed: Any = 0,
) -> float:
    """Share of seed-bootstrap resamples of ``groups`` whose verdict is ``verdict``: each side
    redrawn within its stratum, then the statistic, its Welch interval and the verdict again."""
    rng = np.random.default_rng(seed)
    k, n = len(groups), n_resamples
    diff, var, dof_den = np.zeros(n), np.zeros(n), np.zeros(n)
    worst = np.full(n, -np.inf)  # largest side-A mean (C4: anything to restore?)
    by_size: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for a, b in groups:  # strata of equal run counts are redrawn together
        by_size.setdefault((len(a), len(b)), []).append((a, b))
    for same in by_size.values():
        for side, sign in ((0, 1.0), (1, -1.0)):
            x = np.stack([g[side] for g in same])
            step = max(1, _CHUNK // (n * x.shape[1]))
            for i in range(0, len(x), step):
                mean, v = _redraw(x[i:i + step], n, rng)
                v = v / x.shape[1] / k**2
                diff += sign * mean.sum(axis=0)
                var += v.sum(axis=0)
                dof_den += (v**2).sum(axis=0) / (x.shape[1] - 1)
                if sign > 0:
                    worst = np.maximum(worst, mean.max(axis=0))
    lo, hi = welch_bounds(diff / k, var, dof_den)
    got = interval_verdicts(test.kind, lo, hi, test.margin)
    if test.stable_below is not None:
        got[worst < test.stable_below] = INCONCLUSIVE
    return float(np.mean(got == verdict))
