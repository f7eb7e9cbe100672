"""What a claim is (``Claim``: one definition from which its checks, rows and text come) and what
checking it gives (``ClaimResult``, one row of the claims table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from suite.report.claims.fragility import N_RESAMPLES
from suite.report.claims.rules import INCONCLUSIVE, Test

if TYPE_CHECKING:
    from suite.report.stats import ReportData

N_BOOT_DEFAULT = 2000


@dataclass(frozen=True)
class Options:
    seed: int = 0
    n_boot: int = N_BOOT_DEFAULT
    n_resamples: int = N_RESAMPLES


@dataclass
class ClaimResult:
    id: str
    claim: str
    source: str
    statistic: str
    rule: str
    estimate: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    strata: int = 0
    n_a: int = 0
    n_b: int = 0
    verdict: str = INCONCLUSIVE
    holds: float = float("nan")  # share of resamples giving the same verdict (NaN: no data)
    fragile: bool = False  # holds < FRAGILE_BELOW
    reason: str = ""
    models: str = ""  # the models of the counted settings, comma-separated


@dataclass(frozen=True)
class Claim:
    """One claim of the papers: its id (written here only), its words, the statistic that tests
    it and how that is judged (``test``), the function that computes it from a study
    (``check(data, claim, options)``) and the setting whose values get a row each (``split``,
    a ``definitions.SPLITS`` column, or None). A claim with rows of its own (``rows``: the
    memory claims, one per model family and quantiser plus a pooled one) gets them from
    ``rows(data, claim, options)``; ``check`` then gives its row on the whole study."""

    id: str
    claim: str
    source: str
    statistic: str
    test: Test
    check: Callable[[ReportData, Claim, Options], ClaimResult]
    split: str | None = None
    rows: Callable[[ReportData, Claim, Options], list[ClaimResult]] | None = None

    @property
    def rule(self) -> str:
        return self.test.rule

    def result(self) -> ClaimResult:
        """An empty row of this claim, for ``check`` to fill."""
        return ClaimResult(self.id, self.claim, self.source, self.statistic, self.rule)
