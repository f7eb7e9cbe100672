"""A claim's row from its strata: the statistic, its 95% interval, the verdict and how often it
holds.

The statistic is the mean over strata of mean(A) - mean(B). Its 95% interval is the wider of a
seeded stratified bootstrap interval (stats.stratified_bootstrap) and the Welch-Satterthwaite t
interval (stats.stratified_welch): the bootstrap alone is far too narrow with the 2-3 seeds a
sweep usually has. With no counted stratum the verdict is inconclusive and says why; when the
study lacks one of the groups altogether the claim is not tested.
"""

from __future__ import annotations

import zlib

import numpy as np

from suite.report.claims.claim import Claim, ClaimResult, Options
from suite.report.claims.fragility import FRAGILE_BELOW, verdict_holds
from suite.report.claims.rules import INCONCLUSIVE, NOT_TESTED, interval_verdict, reason
from suite.report.claims.strata import MIN_RUNS, Strata
from suite.report.stats import stratified_bootstrap, stratified_welch


def not_tested(claim: Claim, why: str) -> ClaimResult:
    """The row of a claim the study's design cannot test: ``why`` names what it lacks."""
    res = claim.result()
    res.verdict, res.reason = NOT_TESTED, why
    return res


def decide(claim: Claim, strata: Strata, opts: Options, censored: str | None = None) -> ClaimResult:
    """The row of a claim. ``censored``: why the values are censored (``Test.censored``'s
    rule holds), or None."""
    res = claim.result()
    if not strata.groups:
        a, b = strata.best
        res.reason = ("no setting holds both groups of runs" if a == 0 and b == 0 else
                      f"fewer than {MIN_RUNS} runs per side in every matched setting "
                      f"(best: {a} vs {b})")
        return res
    test, groups = claim.test, strata.groups
    est, b_lo, b_hi = stratified_bootstrap(groups, n_boot=opts.n_boot, seed=opts.seed)
    _, t_lo, t_hi = stratified_welch(groups)
    lo, hi = min(b_lo, t_lo), max(b_hi, t_hi)
    res.estimate, res.ci_low, res.ci_high = est, lo, hi
    res.strata, res.n_a, res.n_b = len(groups), strata.n_a, strata.n_b
    res.models = ", ".join(strata.models)
    res.verdict = interval_verdict(test.kind, lo, hi, test.margin)
    res.reason = reason(test, res.verdict, lo, hi)
    if censored is not None:
        res.verdict, res.reason = INCONCLUSIVE, f"{censored}; {res.reason}"
        # A resample redraws each side from the same values: all censored again, in every one.
        res.holds, res.fragile = 1.0, False
        return res
    worst = max(float(np.mean(a)) for a, _ in groups)
    if test.stable_below is not None and worst < test.stable_below:
        res.verdict = INCONCLUSIVE
        res.reason = (f"the zero-free runs were stable (mean instability ≤ {worst:.2f} points "
                      f"in every setting): nothing for zero to restore; {res.reason}")
    # Seeded by the claim, not by the row's place in the table: the same runs, the same share.
    res.holds = verdict_holds(groups, test, res.verdict, n_resamples=opts.n_resamples,
                              seed=(opts.seed, zlib.crc32(claim.id.encode())))
    res.fragile = res.holds < FRAGILE_BELOW
    return res
