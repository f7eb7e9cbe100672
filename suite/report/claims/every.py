"""Claims that must hold at every budget (C1-mem, C7): one verdict per (setting, budget) stratum,
combined by rules that exclude one another, and how often the combined verdict holds.

A stratum's verdict comes from its own interval, the same as a one-setting claim's (``decide``:
the wider of the seeded bootstrap and the Welch interval). The row is *contradicted* when any
stratum is, *supported* when every stratum is, and *inconclusive* otherwise; its numbers are the
deciding stratum's (the contradicted one furthest out, else the one whose interval reaches lowest).

Fragility redraws every stratum's seeds as ``fragility`` does (deviations scaled by
sqrt(n/(n-1)), Welch intervals), independently per stratum, and combines the resampled verdicts by
the same rules. Adjacent budgets of a setting read the same runs, so their redraws are in truth
correlated; drawing them independently is the approximation every claim here makes where one
group of runs serves several strata (C1's fp32 runs, C3-lr's).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from suite.report.claims.claim import Claim, ClaimResult, Options
from suite.report.claims.fragility import FRAGILE_BELOW, _redraw
from suite.report.claims.rules import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    interval_verdict,
    interval_verdicts,
    reason,
)
from suite.report.claims.strata import MIN_RUNS
from suite.report.stats import stratified_bootstrap, stratified_welch, welch_bounds


@dataclass
class Stratum:
    """One setting at one budget: what side A and side B are there, and their seeds' values."""

    label: str  # for the row's reason, e.g. "cnn, scale_rule = gauss, keep_fp32 = none, 16 KiB"
    a: np.ndarray
    b: np.ndarray
    model: str = ""


def combine(verdicts: np.ndarray) -> np.ndarray:
    """The row's verdict from its strata's (axis 0): contradicted if any is, supported if every
    one is, inconclusive otherwise; works on a (strata, resamples) array too."""
    v = np.asarray(verdicts, dtype=object)
    out = np.full(v.shape[1:], INCONCLUSIVE, dtype=object)
    out[(v == SUPPORTED).all(axis=0)] = SUPPORTED
    out[(v == CONTRADICTED).any(axis=0)] = CONTRADICTED
    return out


def decide_every(claim: Claim, strata: Sequence[Stratum], opts: Options) -> ClaimResult:
    """The row of an every-budget claim over ``strata`` (those with fewer than MIN_RUNS values a
    side are left out, as everywhere)."""
    res = claim.result()
    counted = [s for s in strata if min(np.isfinite(s.a).sum(), np.isfinite(s.b).sum())
               >= MIN_RUNS]
    if not counted:
        res.reason = ("no budget holds both groups of runs" if not strata else
                      f"fewer than {MIN_RUNS} runs per side at every budget")
        return res
    test = claim.test
    rows = []
    for s in counted:
        group = [(s.a[np.isfinite(s.a)], s.b[np.isfinite(s.b)])]
        est, b_lo, b_hi = stratified_bootstrap(group, n_boot=opts.n_boot, seed=opts.seed)
        _, t_lo, t_hi = stratified_welch(group)
        lo, hi = min(b_lo, t_lo), max(b_hi, t_hi)
        rows.append((est, lo, hi, interval_verdict(test.kind, lo, hi, test.margin)))
    verdicts = np.array([r[3] for r in rows], dtype=object)
    verdict = str(combine(verdicts[:, None])[0])
    pick = [j for j, r in enumerate(rows)
            if (r[3] != SUPPORTED if verdict == INCONCLUSIVE else r[3] == verdict)]
    i = min(pick, key=lambda j: (rows[j][1], rows[j][0]))
    est, lo, hi, _ = rows[i]
    res.estimate, res.ci_low, res.ci_high, res.verdict = est, lo, hi, verdict
    res.strata = len(counted)
    res.n_a = int(sum(np.isfinite(s.a).sum() for s in counted))
    res.n_b = int(sum(np.isfinite(s.b).sum() for s in counted))
    res.models = ", ".join(sorted({s.model for s in counted if s.model}))
    n_ok = int((verdicts == SUPPORTED).sum())
    res.reason = (f"{n_ok} of {len(counted)} budgets {SUPPORTED}; deciding: {counted[i].label}, "
                  f"{reason(test, rows[i][3], lo, hi)}")
    res.holds = every_holds(counted, claim, verdict, opts)
    res.fragile = res.holds < FRAGILE_BELOW
    return res


def every_holds(strata: Sequence[Stratum], claim: Claim, verdict: str, opts: Options) -> float:
    """Share of seed resamples whose combined verdict is ``verdict`` (module docstring)."""
    rng = np.random.default_rng((opts.seed, zlib.crc32(claim.id.encode())))
    n, test = opts.n_resamples, claim.test
    got = []
    for s in strata:
        var = np.zeros(n)
        dof_den = np.zeros(n)
        diff = np.zeros(n)
        for x, sign in ((s.a, 1.0), (s.b, -1.0)):
            x = x[np.isfinite(x)]
            mean, v = _redraw(x[None, :], n, rng)
            v = v[0] / len(x)
            diff += sign * mean[0]
            var += v
            dof_den += v**2 / (len(x) - 1)
        lo, hi = welch_bounds(diff, var, dof_den)
        got.append(interval_verdicts(test.kind, lo, hi, test.margin))
    share = float(np.mean(combine(np.stack(got)) == verdict))
    return share if math.isfinite(share) else math.nan
