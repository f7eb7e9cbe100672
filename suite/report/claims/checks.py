"""The statistic of each claim, computed from a study: which runs are side A and side B, matched
how, and what value each run contributes. ``definitions.CLAIMS`` names which check a claim uses.

Instability of a run (claims 3 and 4) is its largest drop in validation accuracy between two
epochs (``max_val_acc_drop``, points); a diverged run counts as losing its best accuracy, since it
ended unusable whatever its last recorded drop was. Instability needs epochs to show: runs with
fewer than MIN_STABILITY_EPOCHS epochs are left out of claims 3 and 4.

C3-lr and C4-lr put claims 3 and 4 on the learning-rate stress axis: their value per run is the
log2 of its setting's max stable learning rate, per seed (suite/report/lrstress.py defines it;
only an lr grid axis is a stress axis, never a tuned lr). A value censored at the sweep's top can
hide an effect above it, so when every value a claim needs to move is censored the verdict is
inconclusive (``Test.censored``); that holds in every resample too, since a resample redraws the
same censored values.

C1-mem, C6 and C7 compare resolutions at equal stored bytes (``EqualBytes``; the accuracy each
resolution reaches at a budget comes from suite/report/memory.py): a stratum there is a setting at
one budget of its ladder, and a study without a width axis cannot test them.

Each check returns ``decide.not_tested`` when the study lacks a group the claim compares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from suite.report.claims.claim import Claim, ClaimResult, Options
from suite.report.claims.decide import decide, not_tested
from suite.report.claims.strata import long_enough, longest_budget, strata
from suite.report.lrstress import NO_LR_VARIATION, seed_frontier, stress_axes
from suite.report.stats import MATCH_TOLERANCE, ReportData, epochs_to_match, run_instability

LOW_RES_MAX_BITS = 2.5  # "low resolution" for claim 3: level grids of at most 2.32 bits

Check = Callable[[ReportData, Claim, Options], ClaimResult]


def gap_to_fp32(label: str) -> Check:
    """The check of an accuracy claim: runs at resolution ``label`` against fp32."""

    def check(data: ReportData, claim: Claim, opts: Options) -> ClaimResult:
        runs = data.runs
        missing = None
        if runs.empty or data.acc_col is None:
            missing = "no completed runs with an accuracy"
        elif not (runs["precision"] == "fp32").any():
            missing = "no fp32 runs"
        elif not (runs["precision"] == label).any():
            missing = f"no {label} runs"
        if missing:
            return not_tested(claim, missing)
        runs = longest_budget(runs)
        res = decide(claim, strata(runs, data.axes, runs["precision"] == label,
                                   runs["precision"] == "fp32", runs["acc"]), opts)
        # A diverged run has no accuracy, so it cannot enter a mean; say so rather than hide it
        # (it counts in the stability claims).
        lost = runs["precision"].isin([label, "fp32"]) & runs["acc"].isna()
        if lost.any():
            by = runs[lost]["precision"].value_counts()
            parts = ", ".join(f"{n} {p}" for p, n in by.items())
            res.reason += f"; runs without accuracy (diverged) left out: {parts}"
        return res

    return check


def _epochs_missing(data: ReportData) -> str | None:
    runs = data.runs
    if runs.empty:
        return "no completed runs"
    if data.curves.empty:
        return "no per-epoch curves"
    if not (runs["precision"] == "fp32").any():
        return "no fp32 runs to define the accuracy to reach"
    if "width" not in data.axes or runs.groupby("model")["width"].nunique().max() < 2:
        return "no width variation: every model has one size"
    return None


def epochs(data: ReportData, claim: Claim, opts: Options) -> ClaimResult:
    missing = _epochs_missing(data)
    if missing:
        return not_tested(claim, missing)
    em = epochs_to_match(data.frames, data.axes, MATCH_TOLERANCE)
    em = em.assign(value=em["epoch_reached"].astype(float).fillna(em["budget"] + 1))
    # Extra epochs over the fp32 runs of the same setting: a small fp32 model may be slow too.
    base = (em[em["grid"] == "fp32"].groupby(data.axes, dropna=False)["value"].median()
            .rename("fp32_epochs").reset_index())
    em = em[em["grid"].isin(["zero", "no zero"])].merge(base, on=data.axes, how="inner")
    if em.empty:
        return not_tested(claim, "no quantised run has a matched fp32 setting with curves")
    em = em.assign(value=em["value"] - em["fp32_epochs"])
    keys = [a for a in data.axes if a != "width"] + ["precision"]
    size = em.groupby([a for a in keys if a != "precision"], dropna=False)["width"]
    small = em["width"] == size.transform("min")
    large = (em["width"] == size.transform("max")) & ~small
    return decide(claim, strata(em, keys, small, large, em["value"]), opts)


def augment(data: ReportData, claim: Claim, opts: Options) -> ClaimResult:
    runs = data.runs
    low = runs[runs["grid"].isin(["zero", "no zero"]) & (runs["bits"] <= LOW_RES_MAX_BITS)] \
        if len(runs) else runs
    missing = None
    low, short = long_enough(low)
    if low.empty:
        missing = short or f"no level-grid runs at ≤ {LOW_RES_MAX_BITS:g} bits"
    elif low["augment"].nunique() < 2 or not (low["augment"] == "none").any():
        missing = "no augmentation variation (needs runs with augment = none and with another)"
    if missing:
        return not_tested(claim, missing)
    keys = [a for a in data.axes if a != "augment"] + ["precision"]
    return decide(claim, strata(low, keys, low["augment"] != "none", low["augment"] == "none",
                                run_instability(low)), opts)


def zero(data: ReportData, claim: Claim, opts: Options) -> ClaimResult:
    runs = data.runs
    grids = runs[runs["grid"].isin(["zero", "no zero"]) & runs["k"].notna()] if len(runs) \
        else runs
    grids, short = long_enough(grids)
    missing = None
    if grids.empty and short:
        missing = short
    elif grids.empty or grids["grid"].nunique() < 2:
        missing = "needs both zero-free (2^k) and zero-included (2^k+1) grids"
    if missing:
        return not_tested(claim, missing)
    return decide(claim, strata(grids, [*data.axes, "k"], grids["grid"] == "no zero",
                                grids["grid"] == "zero", run_instability(grids)), opts)


# --- claims 3 and 4 on the lr-stress axis ------------------------------------------------------


def _low_res(df: pd.DataFrame) -> pd.Series:
    return df["grid"].isin(["zero", "no zero"]) & (df["bits"] <= LOW_RES_MAX_BITS)


def _augment_lr_missing(ms: pd.DataFrame) -> str | None:
    if not _low_res(ms).any():
        return f"no level-grid runs at ≤ {LOW_RES_MAX_BITS:g} bits in an lr sweep"
    if not (ms["precision"] == "fp32").any():
        return "no fp32 runs in an lr sweep"
    if ms["augment"].nunique() < 2 or not (ms["augment"] == "none").any():
        return "no augmentation variation (needs runs with augment = none and with another)"
    return None


def _augment_drops(ms: pd.DataFrame, base: list[str]) -> pd.DataFrame:
    """Per setting (``base`` axes, resolution), seed and augmentation other than none: how far
    the max stable lr falls with it, ``drop`` = value(none) − value(augmented), in log2 units;
    ``both_censored``: neither value saw a break. ``augment`` names the augmented side."""
    on = [*base, "precision", "seed"]
    none = ms.loc[ms["augment"] == "none", [*on, "value", "censored"]]
    pairs = ms[ms["augment"] != "none"].merge(none, on=on, suffixes=("", "_none"))
    return pairs.assign(drop=pairs["value_none"] - pairs["value"],
                        both_censored=pairs["censored"] & pairs["censored_none"])


def augment_lr(data: ReportData, claim: Claim, opts: Options) -> ClaimResult:
    ms = seed_frontier(data)
    missing = NO_LR_VARIATION if ms.empty else _augment_lr_missing(ms)
    if missing:
        return not_tested(claim, missing)
    base = [a for a in stress_axes(data) if a != "augment"]
    pairs = _augment_drops(ms, base)
    low = pairs[_low_res(pairs)]
    # Each low resolution is its own stratum, against the fp32 drops of the same setting (the
    # same fp32 values then serve every resolution of that setting, as in C1's matched gaps).
    strat = [*base, "augment"]
    fp32 = pairs[pairs["precision"] == "fp32"].drop(columns="precision").merge(
        low[[*strat, "precision"]].drop_duplicates(), on=strat)
    both = pd.concat([low.assign(_side=True), fp32.assign(_side=False)], ignore_index=True)
    keys = [*strat, "precision"]
    counted = strata(both, keys, both["_side"], ~both["_side"], both["drop"])
    flags = strata(both, keys, both["_side"], ~both["_side"],
                   both["both_censored"].astype(float).where(both["drop"].notna()))
    censored = bool(flags.groups) and all(a.all() for a, _ in flags.groups)
    return decide(claim, counted, opts, censored=claim.test.censored if censored else None)


def zero_lr(data: ReportData, claim: Claim, opts: Options) -> ClaimResult:
    ms = seed_frontier(data)
    if ms.empty:
        return not_tested(claim, NO_LR_VARIATION)
    ms = ms[ms["grid"].isin(["zero", "no zero"]) & ms["k"].notna()]
    if ms["grid"].nunique() < 2:
        return not_tested(claim, "needs both zero-free (2^k) and zero-included (2^k+1) grids "
                          "in an lr sweep")
    keys = [*stress_axes(data), "k"]
    is_zero, free = ms["grid"] == "zero", ms["grid"] == "no zero"
    counted = strata(ms, keys, is_zero, free, ms["value"])
    flags = strata(ms, keys, is_zero, free, ms["censored"].astype(float))
    censored = bool(flags.groups) and all(b.all() for _, b in flags.groups)
    return decide(claim, counted, opts, censored=claim.test.censored if censored else None)


# --- at equal stored bytes (C1-mem, C6, C7) ----------------------------------------------------


@dataclass(frozen=True)
class EqualBytes:
    """A claim about accuracy at equal stored bytes (suite/report/memory.py reads each
    resolution's accuracy at a ladder of budgets off its own width curve). Per (setting, budget)
    stratum, side A is the best of ``a`` measured there and side B the best of ``b`` (None: the
    best other resolution measured there). ``every``: the claim must hold at every budget rather
    than on the mean over budgets (claims.budgets). Rows: one per model family and quantiser,
    plus a pooled one."""

    a: tuple[str, ...]
    b: tuple[str, ...] | None = None
    every: bool = False

    def check(self, data: ReportData, claim: Claim, opts: Options) -> ClaimResult:
        """The pooled row: every family and quantiser together."""
        missing, by_row = self._strata(data)
        if missing:
            return not_tested(claim, missing)
        return self._decide(claim, [s for rows in by_row.values() for s in rows], opts)

    def rows(self, data: ReportData, claim: Claim, opts: Options) -> list[ClaimResult]:
        missing, by_row = self._strata(data)
        if missing:
            return [not_tested(claim, missing)]
        if len(by_row) == 1:
            return [self._decide(claim, next(iter(by_row.values())), opts)]
        out = []
        for (family, quantiser), strata_ in by_row.items():
            res = self._decide(claim, strata_, opts)
            res.id = f"{claim.id} ({family}, scale_rule = {quantiser})"
            out.append(res)
        res = self._decide(claim, [s for rows in by_row.values() for s in rows], opts)
        res.id = f"{claim.id} (pooled)"
        return [*out, res]

    def _decide(self, claim: Claim, strata_: list, opts: Options) -> ClaimResult:
        from suite.report.claims.budgets import Sides, decide_budgets

        return decide_budgets(claim, strata_, Sides(self.a, self.b), self.every, opts)

    def _missing(self, points: pd.DataFrame, widths: bool) -> str | None:
        if points.empty:
            return "no completed run with an accuracy and stored bytes"
        if not widths:
            return ("no width axis: every resolution was trained at one width (accuracy at "
                    "equal stored bytes needs each resolution's curve over widths)")
        curved = points.groupby(["family", "scale_rule", "keep_fp32", "precision"])["width"] \
            .transform("nunique") > 1
        for side in (self.a, self.b):
            if side is None:
                continue
            names = "/".join(side)
            if not points["precision"].isin(side).any():
                return f"no {names} runs"
            if not (curved & points["precision"].isin(side)).any():
                return f"no {names} runs at more than one width"
        return None

    def _strata(self, data: ReportData) -> tuple[str | None, dict[tuple[str, str], list]]:
        # memory reads claims.strata: imported here, after the claims package has loaded
        from suite.report import memory
        from suite.report.claims.budgets import stratum

        b = memory.analyse(data)
        missing = self._missing(b.points, b.widths)
        if missing:
            return missing, {}
        col = {c: i for i, c in enumerate(b.setting)}
        curved = b.points.groupby(["family", "scale_rule", "precision"])["width"].nunique() > 1
        by_row: dict[tuple[str, str], list] = {
            key[:2]: [] for key in sorted(curved[curved].index)}
        for key, cands in b.values.items():
            family, quantiser = key[col["family"]], key[col["scale_rule"]]
            label = (f"{family}, scale_rule = {quantiser}, keep_fp32 = {key[col['keep_fp32']]}, "
                     f"{key[-1] / memory.KIB:g} KiB")
            by_row.setdefault((family, quantiser), []).append(
                stratum(label, cands, str(key[col["model"]])))
        return None, by_row
