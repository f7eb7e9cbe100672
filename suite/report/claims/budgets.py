"""Deciding a claim about accuracy at equal stored bytes (C1-mem, C6, C7), and how often its
verdict holds.

A stratum is one setting at one budget (suite/report/memory.py reads every resolution's accuracy
there off its own width curve, seed by seed). Side A is the best of the claim's A resolutions
measured there and side B the best of its B resolutions (``Sides``), picked by their means.
Two ways to make a row of the strata:

- ``mean``: the statistic, interval and verdict of ``decide`` (the mean over strata of
  mean(A) − mean(B)), as every other claim (C6).
- ``every``: the claim must hold at every budget (C1-mem, C7). Each stratum gets its own verdict
  from its own interval (the same hull of bootstrap and Welch intervals); the row is
  *contradicted* when any stratum is, *supported* when every stratum is, and *inconclusive*
  otherwise (``combine``: the three exclude one another). Its numbers are the deciding stratum's:
  the contradicted one reaching lowest, else the one whose interval reaches lowest.

Fragility redraws every resolution's seeds in every stratum as ``fragility`` does (deviations
scaled by sqrt(n/(n-1)), Welch intervals) and picks sides A and B again in each resample: which
resolution is best at a budget is itself read from the seeds, so a redraw can change it (a
fragility that kept the observed best would call a winner by a hair sure). Strata are redrawn
independently; adjacent budgets of a setting read the same runs, the approximation every claim
here makes where one group of runs serves several strata (C1's fp32 runs, C3-lr's).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from suite.report.claims.claim import Claim, ClaimResult, Options
from suite.report.claims.decide import decide
from suite.report.claims.fragility import FRAGILE_BELOW, _redraw
from suite.report.claims.rules import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    interval_verdict,
    interval_verdicts,
    reason,
)
from suite.report.claims.strata import MIN_RUNS, Strata
from suite.report.stats import stratified_bootstrap, stratified_welch, welch_bounds


@dataclass(frozen=True)
class Sides:
    """Which resolutions a stratum compares: the best of ``a`` against the best of ``b`` (None:
    of every other resolution measured there)."""

    a: tuple[str, ...]
    b: tuple[str, ...] | None = None

    def pick(self, means: dict[str, float]) -> tuple[str, str] | None:
        """(A's resolution, B's) by the best mean of each side; None when a side is empty."""
        side_a = [p for p in means if p in self.a]
        if not side_a:
            return None
        best_a = max(side_a, key=lambda p: means[p])
        side_b = [p for p in means if (p in self.b if self.b is not None else p != best_a)]
        if not side_b:
            return None
        return best_a, max(side_b, key=lambda p: means[p])


@dataclass
class Stratum:
    """One setting at one budget: each measured resolution's seed values (finite ones, at least
    MIN_RUNS each), and a label for the row's reason."""

    label: str
    values: dict[str, np.ndarray]
    model: str = ""


def stratum(label: str, values: dict[str, np.ndarray], model: str = "") -> Stratum:
    """A stratum of the resolutions with at least MIN_RUNS finite values (fewer: no spread)."""
    kept = {p: v[np.isfinite(v)] for p, v in values.items()}
    return Stratum(label, {p: v for p, v in kept.items() if len(v) >= MIN_RUNS}, model)


def combine(verdicts: np.ndarray) -> np.ndarray:
    """The row's verdict from its strata's (axis 0): contradicted if any is, supported if every
    one is, inconclusive otherwise; works on a (strata, resamples) array too."""
    v = np.asarray(verdicts, dtype=object)
    out = np.full(v.shape[1:], INCONCLUSIVE, dtype=object)
    out[(v == SUPPORTED).all(axis=0)] = SUPPORTED
    out[(v == CONTRADICTED).any(axis=0)] = CONTRADICTED
    return out


def _pairs(strata: Sequence[Stratum], sides: Sides) -> list[tuple[Stratum, str, str]]:
    out = []
    for s in strata:
        got = sides.pick({p: float(np.mean(v)) for p, v in s.values.items()})
        if got is not None:
            out.append((s, *got))
    return out


def decide_budgets(claim: Claim, strata: Sequence[Stratum], sides: Sides, every: bool,
                   opts: Options) -> ClaimResult:
    """The row of an equal-bytes claim over ``strata`` (module docstring)."""
    pairs = _pairs(strata, sides)
    if every:
        res = _decide_every(claim, pairs, opts)
    else:
        counted = Strata(groups=[(s.values[a], s.values[b]) for s, a, b in pairs])
        counted.n_a = sum(len(s.values[a]) for s, a, _ in pairs)
        counted.n_b = sum(len(s.values[b]) for s, _, b in pairs)
        res = decide(claim, counted, opts)
    res.models = ", ".join(sorted({s.model for s, _, _ in pairs if s.model}))
    if not pairs:
        res.reason = "no budget at which both sides were measured with at least " \
            f"{MIN_RUNS} seeds"
        return res
    res.holds = budget_holds([s for s, _, _ in pairs], sides, claim, res.verdict, every, opts)
    res.fragile = res.holds < FRAGILE_BELOW
    return res


def _decide_every(claim: Claim, pairs: list[tuple[Stratum, str, str]],
                  opts: Options) -> ClaimResult:
    res = claim.result()
    if not pairs:
        return res
    test = claim.test
    rows = []
    for s, a, b in pairs:
        group = [(s.values[a], s.values[b])]
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
    s, a, b = pairs[i]
    res.estimate, res.ci_low, res.ci_high, res.verdict = est, lo, hi, verdict
    res.strata = len(pairs)
    res.n_a = sum(len(p[0].values[p[1]]) for p in pairs)
    res.n_b = sum(len(p[0].values[p[2]]) for p in pairs)
    n_ok = int((verdicts == SUPPORTED).sum())
    res.reason = (f"{n_ok} of {len(pairs)} budgets {SUPPORTED}; deciding: {s.label}, {a} vs "
                  f"{b}: {reason(test, rows[i][3], lo, hi)}")
    return res


def budget_holds(strata: Sequence[Stratum], sides: Sides, claim: Claim, verdict: str,
                 every: bool, opts: Options) -> float:
    """Share of seed resamples whose verdict is ``verdict``, sides picked again in each one."""
    rng = np.random.default_rng((opts.seed, zlib.crc32(claim.id.encode())))
    n, test = opts.n_resamples, claim.test
    diffs, terms = [], []  # per stratum: A − B per resample; (variance, dof term) per side
    for s in strata:
        labels = sorted(s.values)
        drawn = {p: _redraw(s.values[p][None, :], n, rng) for p in labels}
        means = np.stack([drawn[p][0][0] for p in labels])  # (labels, n)
        var = np.stack([drawn[p][1][0] / len(s.values[p]) for p in labels])
        size = np.array([len(s.values[p]) for p in labels], dtype=float)[:, None]
        in_a = np.array([p in sides.a for p in labels])
        ia = np.where(in_a[:, None], means, -np.inf).argmax(axis=0)
        in_b = np.array([sides.b is None or p in sides.b for p in labels])[:, None] & \
            np.ones((1, n), dtype=bool)
        if sides.b is None:
            in_b[ia, np.arange(n)] = False  # the best other than A's
        ib = np.where(in_b, means, -np.inf).argmax(axis=0)
        cols = np.arange(n)
        diffs.append(means[ia, cols] - means[ib, cols])
        terms.append((var[ia, cols], var[ib, cols], size[ia, 0], size[ib, 0]))
    if every:
        got = []
        for d, (va, vb, na, nb) in zip(diffs, terms, strict=True):
            lo, hi = welch_bounds(d, va + vb, va**2 / (na - 1) + vb**2 / (nb - 1))
            got.append(interval_verdicts(test.kind, lo, hi, test.margin))
        out = combine(np.stack(got))
    else:
        k = len(strata)
        var = sum(va + vb for va, vb, _, _ in terms) / k**2
        dof_den = sum(va**2 / (na - 1) + vb**2 / (nb - 1) for va, vb, na, nb in terms) / k**4
        lo, hi = welch_bounds(np.mean(diffs, axis=0), var, dof_den)
        out = interval_verdicts(test.kind, lo, hi, test.margin)
    share = float(np.mean(out == verdict))
    return share if math.isfinite(share) else math.nan
