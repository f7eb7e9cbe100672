"""The papers' claims (``CLAIMS``, each written down once), and how a study gets its rows: one per
claim, or one per quantiser / bnn reading where a study has several (``SPLITS``).

A study with several quantisers (``scale_rule``) gets C1-C4 (C3-lr and C4-lr too) once per
quantiser, and one with several bnn readings (``conv_norm``) gets C5 once per reading: pooled, a
reading that trains well and one that does not average to a verdict about neither.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from suite.report.claims import checks
from suite.report.claims.checks import LOW_RES_MAX_BITS
from suite.report.claims.claim import N_BOOT_DEFAULT, Claim, ClaimResult, Options
from suite.report.claims.fragility import N_RESAMPLES
from suite.report.claims.rules import Test
from suite.report.stats import ReportData

ACC_MARGIN = 2.0  # points: "about the same accuracy" means within +-2 points
INSTABILITY_MARGIN = 1.0  # points of val-accuracy drop: smaller differences are "no effect"
EPOCH_MARGIN = 1.0  # epochs: smaller differences in epochs-to-match are "no effect"
LR_MARGIN = 1.0  # log2 of the max stable lr: differences under a factor of 2 are "no effect"

_ACC = Test("equivalence", ACC_MARGIN, "points")
_ACC_EFFECT = Test("effect", ACC_MARGIN, "points")
_NOT_WORSE = Test("noninferiority", ACC_MARGIN, "points")
_INSTABILITY = Test("effect", INSTABILITY_MARGIN, "points")
_LR = Test("effect", LR_MARGIN, "log2 lr")
_MSL = ("log2 of the max stable lr per seed, as a multiple of its setting's smallest lr "
        "(1 = a factor of 2)")
_PAPER1, _PAPER2 = "arXiv 2509.07025", "arXiv 2502.08795"
# At equal stored bytes (checks.EqualBytes): how a budget's accuracy is read, and the every rule.
_AT_BUDGET = ("at each budget of a ladder (powers of 2 KiB) per setting, each resolution's "
              "accuracy read off its own width curve, linear in log stored bytes between adjacent "
              "widths, never extrapolated")
_EVERY = ("; each budget decided by the interval of its own setting, then the row: contradicted "
          "if any budget is, supported if every budget is, otherwise inconclusive (its numbers: "
          "the deciding budget's); a side picked by its mean, again in each fragility resample")
_BEST_MEM = checks.EqualBytes(("2.32",), every=True)
_PARETOQ = checks.EqualBytes(("1.58", "2", "2.32", "3"), ("1", "bnn", "4"))
_FOUR_BITS = checks.EqualBytes(("4",), every=True)

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "C1", "2.32-bit weights (5 levels) reach about the 32-bit accuracy", _PAPER2,
        "acc(2.32) − acc(fp32), points, matched settings at each model's largest epoch budget",
        _ACC, checks.gap_to_fp32("2.32"), split="scale_rule",
    ),
    Claim(
        "C2", "small low-resolution models need more epochs than large ones to match 32-bit",
        _PAPER2,
        "extra epochs over fp32 to reach fp32 − 1 pt: smallest − largest width of a model, "
        "per resolution (never reached = budget + 1)",
        Test("effect", EPOCH_MARGIN, "epoch"), checks.epochs, split="scale_rule",
    ),
    Claim(
        "C3", "data augmentation destabilises low-resolution training", _PAPER2,
        f"instability (max val-acc drop, points) with − without augmentation, level grids "
        f"≤ {LOW_RES_MAX_BITS:g} bits",
        _INSTABILITY, checks.augment, split="scale_rule",
    ),
    Claim(
        "C3-lr", "data augmentation lowers the max stable learning rate of low-resolution "
        "models more than that of fp32", f"{_PAPER2} (claim 3 on the lr-stress axis)",
        f"{_MSL}: without − with augmentation (seeds paired), level grids ≤ "
        f"{LOW_RES_MAX_BITS:g} bits (each resolution its own setting) − fp32 of the same setting",
        dataclasses.replace(_LR, censored=(
            "every low-resolution run stayed stable up to the sweep's largest lr, with and "
            "without augmentation (max stable lr censored: nothing shows it lowered)")),
        checks.augment_lr, split="scale_rule",
    ),
    Claim(
        "C4", "including zero as a weight value restores stability", _PAPER2,
        "instability (max val-acc drop, points) of 2^k levels − 2^k+1 levels, same bit budget k",
        dataclasses.replace(_INSTABILITY, stable_below=INSTABILITY_MARGIN), checks.zero,
        split="scale_rule",
    ),
    Claim(
        "C4-lr", "zero-included grids stay stable at a higher learning rate than zero-free "
        "grids of the same bit budget", f"{_PAPER2} (claim 4 on the lr-stress axis)",
        f"{_MSL}: 2^k+1 levels − 2^k levels, same bit budget k",
        dataclasses.replace(_LR, censored=(
            "the zero-free runs stayed stable up to the sweep's largest lr in every matched "
            "setting (max stable lr censored: a higher one for zero cannot show)")),
        checks.zero_lr, split="scale_rule",
    ),
    Claim(
        "C5", "binary normalized networks (bnn) reach about the 32-bit accuracy", _PAPER1,
        "acc(bnn) − acc(fp32), points, matched settings at each model's largest epoch budget",
        _ACC, checks.gap_to_fp32("bnn"), split="conv_norm",
    ),
    Claim(
        "C1-mem", "at equal stored bytes, 2.32 bits is within the margin of the best resolution "
        "at every budget", f"{_PAPER2} (2.32 bits as the best balance of memory and accuracy)",
        f"acc(2.32) − acc(the best other resolution at the budget), points, "
        f"{_AT_BUDGET}{_EVERY}",
        _NOT_WORSE, _BEST_MEM.check, rows=_BEST_MEM.rows,
    ),
    Claim(
        "C6", "at equal stored bytes, 1.58-3 bits beat 4 bits and binary",
        "Liu et al. 2025, ParetoQ (arXiv 2502.02631)",
        f"acc(the best of 1.58, 2, 2.32, 3 bits) − acc(the best of 4 bits, 1 bit and bnn), "
        f"points, {_AT_BUDGET}; mean over the settings and budgets where both sides are "
        "measured; a side picked by its mean, again in each fragility resample",
        _ACC_EFFECT, _PARETOQ.check, rows=_PARETOQ.rows,
    ),
    Claim(
        "C7", "4 bits is the best use of a fixed number of bits",
        "Dettmers & Zettlemoyer 2023 (arXiv 2212.09720; post-training quantisation, tested "
        "here in its QAT counterpart)",
        f"acc(4) − acc(the best other resolution at the budget), points, {_AT_BUDGET}{_EVERY}",
        _NOT_WORSE, _FOUR_BITS.check, rows=_FOUR_BITS.rows,
    ),
)
SPECS: dict[str, Claim] = {c.id: c for c in CLAIMS}


# --- one row per quantiser and per bnn reading -----------------------------------------------


@dataclass(frozen=True)
class Split:
    """A setting that changes only some runs (``grids``), so the claims about those runs (each
    claim names its split) are checked once per value of it, each against the unchanged runs
    (fp32) of the same value."""

    column: str
    grids: tuple[str, ...]
    runs: str  # what the changed runs are called, for the statistic
    what: str  # what one value of the column is, for report.md

    @property
    def claims(self) -> tuple[str, ...]:
        return tuple(c.id for c in CLAIMS if c.split == self.column)


SPLITS = (
    Split("scale_rule", ("zero", "no zero"), "level-grid", "quantiser"),
    Split("conv_norm", ("bnn",), "bnn", "bnn reading"),
)


def split_values(data: ReportData, split: Split) -> list[str]:
    """The values of ``split.column`` among the runs it changes, most runs first."""
    runs = data.runs
    if runs.empty or split.column not in runs:
        return []
    values = runs.loc[runs["grid"].isin(split.grids), split.column].dropna().astype(str)
    counts = values.value_counts()
    return sorted(counts.index, key=lambda v: (-counts[v], v))


def _subset(data: ReportData, split: Split, value: str) -> tuple[ReportData, str | None]:
    """The study as it would be with only ``value`` for the changed runs, and a note when their
    reference runs had to come from another value (the sweep did not repeat them per value)."""
    runs, col = data.runs, split.column
    text = runs[col].astype(object).where(runs[col].notna(), None).map(
        lambda v: None if v is None else str(v))
    changed = runs["grid"].isin(split.grids)
    ref_text = text[~changed]
    note, ref = None, value
    if not (ref_text == value).any() and ref_text.notna().any():
        ref = ref_text.value_counts().index[0]  # the sweep's default: one copy of each run
        note = f"reference runs (fp32) have {col} = {ref}: none with {value}"
    keep = (changed & (text == value)) | (~changed & ((text == ref) | ref_text.isna().all()))
    ids = set(runs.loc[keep, "run_id"])
    frames = dataclasses.replace(
        data.frames, results=data.frames.results[data.frames.results["run_id"].isin(ids)],
        curves=data.curves[data.curves["run_id"].isin(ids)])
    axes = [a for a in data.axes if a != col]
    return dataclasses.replace(data, frames=frames, runs=runs[keep], axes=axes), note


def _rows(data: ReportData, claim: Claim, opts: Options) -> list[ClaimResult]:
    if claim.rows is not None:
        return claim.rows(data, claim, opts)
    split = next((s for s in SPLITS if s.column == claim.split), None)
    values = split_values(data, split) if split is not None else []
    if split is None or len(values) < 2:
        return [claim.check(data, claim, opts)]
    rows = []
    for value in values:
        sub, note = _subset(data, split, value)
        res = claim.check(sub, claim, opts)
        res.id = f"{claim.id} ({split.column} = {value})"
        res.statistic += f"; {split.runs} runs with {split.column} = {value}"
        res.reason += f"; {note}" if note else ""
        rows.append(res)
    return rows


def evaluate_claims(data: ReportData, *, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
                    n_resamples: int = N_RESAMPLES) -> list[ClaimResult]:
    """Every claim in CLAIMS order: one row each, or one per quantiser / bnn reading (SPLITS)
    when the study has several."""
    opts = Options(seed, n_boot, n_resamples)
    return [res for claim in CLAIMS for res in _rows(data, claim, opts)]


def check_claim(claim_id: str, data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
                n_resamples: int = N_RESAMPLES) -> ClaimResult:
    """One claim's row on the whole study (no split)."""
    claim = SPECS[claim_id]
    return claim.check(data, claim, Options(seed, n_boot, n_resamples))
