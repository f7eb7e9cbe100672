"""The papers' claims, each checked against the study's runs with a written-down rule.

Every claim compares two groups of runs that differ in one thing only (resolution, model size,
augmentation, or zero in the grid), matched within strata (``strata``); the statistic, its
interval and the verdict (``decide``) follow rules that exclude one another (``rules``); each
verdict carries how often it holds when the seeds are redrawn (``fragility``). ``definitions``
writes every claim down once (``Claim``: its words, statistic, rule, check and split), and
``text`` puts them in words for report.md.
"""

from suite.report.claims.checks import LOW_RES_MAX_BITS
from suite.report.claims.claim import N_BOOT_DEFAULT, Claim, ClaimResult, Options
from suite.report.claims.definitions import (
    ACC_MARGIN,
    CLAIMS,
    EPOCH_MARGIN,
    INSTABILITY_MARGIN,
    LR_MARGIN,
    SPECS,
    SPLITS,
    Split,
    check_claim,
    evaluate_claims,
    split_values,
)
from suite.report.claims.fragility import FRAGILE_BELOW, N_RESAMPLES, verdict_holds
from suite.report.claims.rules import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_TESTED,
    OPPOSITE,
    RULES,
    SUPPORTED,
    VERDICTS,
    Rule,
    Test,
    interval_verdict,
    interval_verdicts,
    rule_text,
)
from suite.report.claims.strata import MIN_RUNS, MIN_STABILITY_EPOCHS, longest_budget
from suite.report.claims.text import (
    claims_frame,
    rules_markdown,
    share_text,
    verdict_line,
    verdict_lines,
)

__all__ = [
    "ACC_MARGIN", "CLAIMS", "CONTRADICTED", "EPOCH_MARGIN", "FRAGILE_BELOW", "INCONCLUSIVE",
    "INSTABILITY_MARGIN", "LOW_RES_MAX_BITS", "LR_MARGIN", "MIN_RUNS", "MIN_STABILITY_EPOCHS",
    "NOT_TESTED", "N_BOOT_DEFAULT", "N_RESAMPLES", "OPPOSITE", "RULES", "SPECS", "SPLITS",
    "SUPPORTED", "VERDICTS", "Claim", "ClaimResult", "Options", "Rule", "Split", "Test",
    "check_claim", "claims_frame", "evaluate_claims", "interval_verdict", "interval_verdicts",
    "longest_budget", "rule_text", "rules_markdown", "share_text", "split_values", "verdict_holds",
    "verdict_line", "verdict_lines",
]
