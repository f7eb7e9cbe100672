"""Verdict rules: how a claim's 95% interval becomes supported, contradicted, opposite or
inconclusive.

The rules of a kind exclude one another (``RULES``): exactly one holds for any interval, so the
order in which they are checked cannot decide. The margin comes first: an effect claim whose
interval lies within ±margin is *no meaningful effect* however clearly it excludes 0 (a rerun of
the default study moved C4 from [-0.00, +0.65] to [+0.07, +0.70], which an "above 0 wins" order
read as supported).

*Not tested* is no interval's verdict: it is the row of a claim whose comparison the study's
design does not hold at all (C3-lr without an lr grid axis, C5 without bnn runs); more seeds
would not change it, unlike an inconclusive one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
OPPOSITE = "opposite"
INCONCLUSIVE = "inconclusive"
NOT_TESTED = "not tested"
VERDICTS = (SUPPORTED, CONTRADICTED, OPPOSITE, INCONCLUSIVE, NOT_TESTED)


@dataclass(frozen=True)
class Rule:
    """One verdict and when it holds: ``test(low, high, margin)`` works on numbers and arrays."""

    verdict: str
    text: str  # {m}: the margin, {u}: its unit
    test: Callable[[Any, Any, float], Any]


# An effect claim predicts a positive statistic. Each test excludes the others for any
# low <= high and margin > 0; tests/report/test_claims.py checks that on a dense grid.
EFFECT_RULES = (
    Rule(CONTRADICTED, "contradicted (no meaningful effect) if the 95% CI lies within ±{m} {u} "
         "(−{m} ≤ low and high ≤ +{m})", lambda lo, hi, m: (-m <= lo) & (hi <= m)),
    Rule(SUPPORTED, "supported if it lies above 0 and reaches past +{m} (low > 0 and high > +{m})",
         lambda lo, hi, m: (lo > 0) & (hi > m)),
    Rule(OPPOSITE, "opposite if it lies below 0 and reaches past −{m} (high < 0 and low < −{m})",
         lambda lo, hi, m: (hi < 0) & (lo < -m)),
    Rule(INCONCLUSIVE, "inconclusive if it holds 0 and reaches past ±{m} (low ≤ 0 ≤ high, and "
         "low < −{m} or high > +{m})", lambda lo, hi, m: (lo <= 0) & (hi >= 0) & ((lo < -m) | (hi > m))),
)
EQUIVALENCE_RULES = (
    Rule(SUPPORTED, "supported if the 95% CI lies within ±{m} {u} (−{m} ≤ low and high ≤ +{m})",
         lambda lo, hi, m: (-m <= lo) & (hi <= m)),
    Rule(CONTRADICTED, "contradicted if it lies entirely beyond one margin (high < −{m} or "
         "low > +{m})", lambda lo, hi, m: (hi < -m) | (lo > m)),
    Rule(INCONCLUSIVE, "inconclusive if it crosses a margin (low < −{m} ≤ high, or "
         "low ≤ +{m} < high)", lambda lo, hi, m: ((lo < -m) & (-m <= hi)) | ((lo <= m) & (m < hi))),
)
# A non-inferiority claim predicts a statistic no lower than −margin (A no worse than B by more
# than the margin; far better is fine): C1-mem and C7, A against the best other resolution.
NONINFERIORITY_RULES = (
    Rule(SUPPORTED, "supported if the 95% CI lies above −{m} {u} (−{m} ≤ low: no more than "
         "{m} {u} behind, however far ahead)", lambda lo, hi, m: -m <= lo),
    Rule(CONTRADICTED, "contradicted if it lies entirely below −{m} (high < −{m})",
         lambda lo, hi, m: hi < -m),
    Rule(INCONCLUSIVE, "inconclusive if it crosses −{m} (low < −{m} ≤ high)",
         lambda lo, hi, m: (lo < -m) & (-m <= hi)),
)
RULES: dict[str, tuple[Rule, ...]] = {"effect": EFFECT_RULES, "equivalence": EQUIVALENCE_RULES,
                                      "noninferiority": NONINFERIORITY_RULES}


def interval_verdicts(kind: str, low: Any, high: Any, margin: float) -> np.ndarray:
    """The verdict of each 95% interval [low, high] by the rules of ``kind`` ("effect",
    "equivalence" or "noninferiority"), as an object array; an interval with a NaN bound is
    inconclusive."""
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    out = np.full(np.broadcast_shapes(lo.shape, hi.shape), INCONCLUSIVE, dtype=object)
    for rule in RULES[kind]:
        out[np.broadcast_to(rule.test(lo, hi, margin), out.shape)] = rule.verdict
    return out


def interval_verdict(kind: str, low: float, high: float, margin: float) -> str:
    """The verdict of one interval: what every claim row of the report is decided by."""
    return str(interval_verdicts(kind, low, high, margin)[()])


def rule_text(kind: str, margin: float, unit: str) -> str:
    return "; ".join(r.text.format(m=f"{margin:g}", u=unit) for r in RULES[kind])


@dataclass(frozen=True)
class Test:
    """How a claim's statistic is judged: its kind of rules, margin and unit, and the rules that
    come before the interval's (each None where the claim has none)."""

    kind: str  # effect | equivalence | noninferiority
    margin: float
    unit: str
    # C4: inconclusive when side A's mean stays under this in every stratum (nothing to restore)
    stable_below: float | None = None
    # C3-lr, C4-lr: when the values the claim needs to move are all censored at the top of the
    # lr sweep, inconclusive; the text says which values, for the rule
    censored: str | None = None

    @property
    def interval_rule(self) -> str:
        """The rules of the interval alone (claims of one kind and margin share them)."""
        return rule_text(self.kind, self.margin, self.unit)

    def worded(self, interval: str) -> str:
        """The whole rule: the preconditions, then ``interval`` (the interval's rules, or a
        reference to where they were stated)."""
        first = []
        if self.stable_below is not None:
            first.append(f"the zero-free runs were stable to begin with (mean instability under "
                         f"{self.stable_below:g} point in every matched setting: nothing to "
                         "restore)")
        if self.censored is not None:
            first.append(self.censored)
        if not first:
            return interval
        return f"first, inconclusive whenever {' or '.join(first)}; otherwise {interval}"

    @property
    def rule(self) -> str:
        """The whole rule in words: the preconditions, then the interval's rules."""
        return self.worded(self.interval_rule)


def reason(test: Test, verdict: str, lo: float, hi: float) -> str:
    """Why an interval got its verdict, in the words of its rule."""
    ci, m = f"95% CI [{lo:+.2f}, {hi:+.2f}]", f"{test.margin:g}"
    if test.kind == "noninferiority":
        return {SUPPORTED: f"{ci} above −{m}", CONTRADICTED: f"{ci} entirely below −{m}"}.get(
            verdict, f"{ci} crosses −{m}")
    if test.kind == "equivalence":
        if verdict == SUPPORTED:
            return f"{ci} within ±{m}"
        if verdict == CONTRADICTED:
            return f"{ci} entirely outside ±{m} ({'below −' if hi < 0 else 'above +'}{m})"
        crossed = [s + m for s, hit in (("−", lo < -test.margin), ("+", hi > test.margin)) if hit]
        return f"{ci} crosses {' and '.join(crossed)}"
    return {CONTRADICTED: f"{ci} within ±{m}: no meaningful effect",
            SUPPORTED: f"{ci} above 0 and past +{m}",
            OPPOSITE: f"{ci} below 0 and past −{m}: the opposite effect",
            INCONCLUSIVE: f"{ci} includes 0 and reaches past ±{m}"}[verdict]
