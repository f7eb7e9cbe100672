"""The claims in words, for report.md: the rules section (each rule stated once), one summary
line per verdict, and the numbers of every row for claims.csv."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from suite.report.claims.claim import N_BOOT_DEFAULT, ClaimResult
from suite.report.claims.definitions import CLAIMS, LR_MARGIN, SPECS, SPLITS
from suite.report.claims.fragility import FRAGILE_BELOW, N_RESAMPLES
from suite.report.claims.rules import NOT_TESTED
from suite.report.claims.strata import MIN_RUNS, MIN_STABILITY_EPOCHS
from suite.report.lrstress import STABLE_ACC_MARGIN
from suite.report.stats import MATCH_TOLERANCE

# What each accuracy column is, for a reader matching the report to what scrolled by.
ACC_WORDS = {"test_acc": "`test_acc` (the final model on the held-out test set)",
             "val_acc": "`val_acc` (the last epoch's validation accuracy)",
             "best_val_acc": "`best_val_acc` (the best epoch's validation accuracy)"}


def _acc_words(acc_col: str | None) -> str:
    return ACC_WORDS.get(acc_col or "", "the report's accuracy column")


def _ids(kind: str) -> list[str]:
    return [c.id for c in CLAIMS if c.test.kind == kind]


def _with(rule: str) -> list[str]:
    """The claims whose test has the precondition ``rule`` (stable_below, censored)."""
    return [c.id for c in CLAIMS if getattr(c.test, rule) is not None]


def rules_markdown(acc_col: str | None = None) -> str:
    """How every verdict is reached, for report.md (the same constants the code uses);
    ``acc_col``: the accuracy the claims compare (stats.accuracy_column)."""
    lines = [
        "Each claim compares two groups of runs that differ in one thing only. Runs are matched "
        "within a *setting*: the same model, dataset and every other swept setting (width, "
        "augmentation, epochs, ...), and for C2-C4 the same resolution or bit budget. A setting "
        f"counts only with at least {MIN_RUNS} finite values on each side (no spread can be "
        "judged from one run). The statistic is the mean over counted settings of "
        "mean(A) − mean(B). Its 95% interval is the wider of two: a seeded bootstrap that "
        f"resamples each side within its setting ({N_BOOT_DEFAULT} resamples, percentile "
        "interval) and the Welch–Satterthwaite t interval (the bootstrap alone is far too "
        "narrow with 2-3 seeds). With no counted setting the verdict is *inconclusive* and the "
        "row says why; a claim whose comparison the study does not hold at all (no lr grid "
        "axis for C3-lr and C4-lr, no bnn runs for C5, ...) is *not tested*, and the row says "
        "what it lacks.",
        "",
        "The verdict rules of a claim exclude one another: exactly one holds for any interval, "
        "and the margin comes first. An effect claim "
        f"({', '.join(_ids('effect'))}) whose interval lies within the margin is "
        "*contradicted* (no meaningful effect) however clearly it excludes 0; it is "
        "*supported* only when the interval lies above 0 and reaches past the margin, and "
        "*opposite* when it lies below 0 and reaches past the other margin (the effect runs the "
        "other way). An equivalence claim "
        f"({', '.join(_ids('equivalence'))}) is *supported* within the margin, "
        "*contradicted* when the interval lies entirely beyond one margin, and *inconclusive* "
        "when it crosses one. A non-inferiority claim "
        f"({', '.join(_ids('noninferiority'))}) is *supported* when the interval lies above "
        "minus the margin (no more than the margin behind, however far ahead), *contradicted* "
        "when it lies entirely below it, and *inconclusive* when it crosses it.",
        "",
        f"*holds*: the share of {N_RESAMPLES} seeded resamples of the study that give the same "
        "verdict. A resample redraws the values of each side within each counted setting with "
        "replacement (deviations from their mean scaled by √(n/(n−1)), so a redraw of 2-3 seeds "
        "is as spread as the seeds), then recomputes the statistic, its Welch interval and the "
        f"verdict ({' and '.join(_with('stable_below'))}'s nothing-to-restore rule included; "
        f"the censoring rule of {' and '.join(_with('censored'))}, "
        "when it holds, holds in every resample: a redraw picks from the same censored values). "
        "A verdict that holds in under "
        f"{FRAGILE_BELOW:.0%} of them is marked "
        "*(fragile)*: another run of the same study may well give another one.",
        "",
        *_split_lines(),
        "",
        f"Accuracy is {_acc_words(acc_col)} in points. Instability of a run (C3, C4) is "
        "its largest epoch-to-epoch drop in validation accuracy, in points; a diverged run "
        "counts as losing its whole best accuracy; runs of fewer than "
        f"{MIN_STABILITY_EPOCHS} epochs are left out. Diverged runs have no accuracy and are left "
        "out of C1 and C5 (the row says how many). Epochs to match (C2) is the first epoch a "
        f"run's validation accuracy comes within {MATCH_TOLERANCE:g} point of its setting's "
        "mean final fp32 accuracy (never reached = its budget + 1), minus the same for the "
        "fp32 runs of the setting.",
        "",
        _lr_paragraph(),
        "",
    ]
    first: dict[str, str] = {}  # interval rules shared by claims are written out once
    for claim in CLAIMS:
        interval = claim.test.interval_rule
        rule = claim.test.worded(f"as {first[interval]}" if interval in first else interval)
        first.setdefault(interval, claim.id)
        lines.append(f"- **{claim.id}** ({claim.source}): {claim.claim}. Statistic: "
                     f"{claim.statistic}. Rule: {rule}.")
    return "\n".join(lines)


def _lr_paragraph() -> str:
    return (
        f"Max stable learning rate ({', '.join(_with('censored'))}, the max_stable_lr table): "
        "a stress setting is "
        "every swept setting but lr, at one resolution. An lr of it is *stable* when no seed "
        "diverged there and, from the setting's best lr (the one of its best mean accuracy over "
        "its lrs, of the runs that did not diverge) up, the mean accuracy of its runs is within "
        f"{STABLE_ACC_MARGIN:g} points of that best; below the best lr only divergence counts "
        "(a lower accuracy there is under-training at a small lr, not instability); its *max "
        "stable lr* is the largest lr such that it and every "
        "smaller lr of the sweep are stable (a frontier walked up from the smallest lr). Per seed "
        "the same walk runs over that seed's runs alone (a run is stable when it did not diverge "
        "and, from the setting's best lr up, its accuracy is within the margin), valued as "
        "log2 of the max stable lr over the "
        "setting's smallest lr: one grid step below the smallest when not even that is stable, "
        "and log2(largest / smallest) when every lr is, a *censored* value (the true limit lies "
        "at or above the largest lr the sweep tried). C3-lr pairs the seeds of a setting by seed "
        "number. The margin is "
        f"{LR_MARGIN:g} in log2 units, a factor of {2 ** LR_MARGIN:g} in lr. When every value a "
        "claim needs to move is censored, its verdict is inconclusive (its rule says which). "
        "Everywhere else lr is an ordinary setting: the other claims compare runs at the same lr.")


def _claim_span(claims: Sequence[str]) -> str:
    """("C1", "C2", "C3", "C3-lr", "C4", "C4-lr") -> "C1-C4 (and C3-lr, C4-lr)"."""
    base = [c for c in claims if "-" not in c]
    extra = [c for c in claims if "-" in c]
    text = f"{base[0]}-{base[-1]}" if len(base) > 1 else base[0]
    return text + (f" (and {', '.join(extra)})" if extra else "")


def _split_lines() -> list[str]:
    parts = [f"{_claim_span(s.claims)} {'get ' if i == 0 else ''}one row "
             f"per {s.what} (`{s.column}` of the {s.runs} runs)" for i, s in enumerate(SPLITS)]
    return [
        f"{' and '.join(parts)} when a study has more than one, with ids such as "
        "`C5 (conv_norm = c)`: pooled, a reading that trains well and one that does not would "
        "average to a verdict about neither. Each row compares those runs with the reference "
        "runs (fp32) of the same value, or of the study's one value when the sweep did not "
        "repeat them per value (the row says so)."]


def share_text(holds: float) -> str:
    """A share of resamples in whole percent, rounded down: a share under the fragile mark (80%)
    must not read as 80%."""
    return "–" if math.isnan(holds) else f"{math.floor(round(holds * 100, 6))}%"


def _base_id(result: ClaimResult) -> str:
    return result.id.split(" (", 1)[0]


def verdict_line(result: ClaimResult) -> str:
    """One line of the summary: the claim, its verdict, estimate with interval, and how often the
    verdict holds (``result`` decided, not a not-tested row)."""
    claim = SPECS[_base_id(result)]
    verdict = result.verdict + (" (fragile)" if result.fragile else "")
    if math.isnan(result.estimate):
        numbers = result.reason
    else:
        numbers = (f"{result.estimate:+.2f} {claim.test.unit} [{result.ci_low:+.2f}, "
                   f"{result.ci_high:+.2f}]")
    return (f"**{result.id}** {claim.claim}: **{verdict}**, {numbers}; holds in "
            f"{share_text(result.holds)} of resamples")


def verdict_lines(results: Sequence[ClaimResult]) -> list[str]:
    """The summary's verdicts: one line per tested row, then one line naming the claims this
    study cannot test and what each lacks."""
    lines = [verdict_line(r) for r in results if r.verdict != NOT_TESTED]
    untested = [r for r in results if r.verdict == NOT_TESTED]
    if untested:
        by_reason: dict[str, list[str]] = {}
        for r in untested:
            by_reason.setdefault(r.reason, []).append(r.id)
        lines.append("not tested by this study's design: " + "; ".join(
            f"{', '.join(ids)} ({why})" for why, ids in by_reason.items()))
    return lines


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """Numbers kept as numbers (for claims.csv); tables.claims_table formats them for reading."""
    return pd.DataFrame([r.__dict__ for r in results])
