"""The papers' claims, each checked against the study's runs with a written-down rule.

Every claim compares two groups of runs that differ in one thing only (resolution, model size,
augmentation, or zero in the grid). Runs are matched within a *stratum*: the same model, dataset,
width, augmentation, epochs, ... (the setting axes) and, where it applies, the same resolution.
The statistic is the mean over strata of mean(A) - mean(B). Its 95% interval is the wider of a
seeded stratified bootstrap interval (stats.stratified_bootstrap) and the Welch-Satterthwaite t
interval (stats.stratified_welch): the bootstrap alone is far too narrow with the 2-3 seeds a
sweep usually has. A stratum counts only with at least MIN_RUNS finite values on each side; with
no such stratum the verdict is inconclusive and says why.

Instability of a run (claims 3 and 4) is its largest drop in validation accuracy between two
epochs (``max_val_acc_drop``, points); a diverged run counts as losing its best accuracy, since it
ended unusable whatever its last recorded drop was. Instability needs epochs to show: runs with
fewer than MIN_STABILITY_EPOCHS epochs are left out of claims 3 and 4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from suite.report.stats import (
    MATCH_TOLERANCE,
    ReportData,
    epochs_to_match,
    run_instability,
    stratified_bootstrap,
    stratified_welch,
)

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"

MIN_RUNS = 2  # per side and stratum: below this there is no spread to judge a difference by
ACC_MARGIN = 2.0  # points: "about the same accuracy" means within +-2 points
INSTABILITY_MARGIN = 1.0  # points of val-accuracy drop: smaller differences are "no effect"
EPOCH_MARGIN = 1.0  # epochs: smaller differences in epochs-to-match are "no effect"
LOW_RES_MAX_BITS = 2.5  # "low resolution" for claim 3: level grids of at most 2.32 bits
N_BOOT_DEFAULT = 2000
MIN_STABILITY_EPOCHS = 3  # the largest epoch-to-epoch drop needs at least two changes to pick from


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
    reason: str = ""


@dataclass(frozen=True)
class _Spec:
    id: str
    claim: str
    source: str
    statistic: str
    rule: str


_EQUIV_RULE = (
    "supported if the 95% CI lies within ±{m:g} points; contradicted if it lies entirely outside "
    "±{m:g}; otherwise inconclusive"
)
_EFFECT_RULE = (
    "supported if the 95% CI lies above 0; contradicted if it lies below 0 or within ±{m:g} "
    "{unit} (no effect); otherwise inconclusive"
)

SPECS: dict[str, _Spec] = {
    "C1": _Spec(
        "C1", "2.32-bit weights (5 levels) reach about the 32-bit accuracy",
        "arXiv 2502.08795",
        "acc(2.32) − acc(fp32), points, matched settings at each model's largest epoch budget",
        _EQUIV_RULE.format(m=ACC_MARGIN),
    ),
    "C2": _Spec(
        "C2", "small low-resolution models need more epochs than large ones to match 32-bit",
        "arXiv 2502.08795",
        "extra epochs over fp32 to reach fp32 − 1 pt: smallest − largest width of a model, "
        "per resolution (never reached = budget + 1)",
        _EFFECT_RULE.format(m=EPOCH_MARGIN, unit="epoch"),
    ),
    "C3": _Spec(
        "C3", "data augmentation destabilises low-resolution training", "arXiv 2502.08795",
        f"instability (max val-acc drop, points) with − without augmentation, level grids "
        f"≤ {LOW_RES_MAX_BITS:g} bits",
        _EFFECT_RULE.format(m=INSTABILITY_MARGIN, unit="points"),
    ),
    "C4": _Spec(
        "C4", "including zero as a weight value restores stability", "arXiv 2502.08795",
        "instability (max val-acc drop, points) of 2^k levels − 2^k+1 levels, same bit budget k",
        _EFFECT_RULE.format(m=INSTABILITY_MARGIN, unit="points")
        + f"; inconclusive whenever the zero-free runs were stable to begin with (mean "
        f"instability under {INSTABILITY_MARGIN:g} point in every matched setting: nothing to "
        "restore)",
    ),
    "C5": _Spec(
        "C5", "binary normalized networks (bnn) reach about the 32-bit accuracy",
        "arXiv 2509.07025",
        "acc(bnn) − acc(fp32), points, matched settings at each model's largest epoch budget",
        _EQUIV_RULE.format(m=ACC_MARGIN),
    ),
}


def longest_budget(runs: pd.DataFrame) -> pd.DataFrame:
    """Each model's runs at its largest epoch budget (runs of unknown budget kept): the papers'
    accuracy claims are about trained models; a short budget measures claim C2 instead."""
    if runs.empty or runs["epochs"].isna().all():
        return runs
    top = runs.groupby(["dataset", "model"], dropna=False)["epochs"].transform("max")
    return runs[runs["epochs"].isna() | (runs["epochs"] == top)]


def _long_enough(df: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """Runs trained for at least MIN_STABILITY_EPOCHS epochs (an unknown budget is kept), and
    the reason to give when that leaves none out of some."""
    if df.empty:
        return df, None
    keep = df["epochs"].isna() | (df["epochs"] >= MIN_STABILITY_EPOCHS)
    if keep.any():
        return df[keep], None
    return df[keep], (f"every run trained fewer than {MIN_STABILITY_EPOCHS} epochs: too short to "
                      "measure instability (largest epoch-to-epoch drop)")


def _strata(
    df: pd.DataFrame, keys: list[str], side_a: pd.Series, side_b: pd.Series, value: pd.Series,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int, int, int, int]:
    """Paired groups per stratum with >= MIN_RUNS finite values a side; also the largest side
    sizes seen in any stratum holding both sides (to explain an inconclusive verdict)."""
    d = df.assign(_v=value, _a=side_a, _b=side_b)
    d = d[d["_a"] | d["_b"]].dropna(subset=["_v"])
    strata, n_a, n_b, best_a, best_b = [], 0, 0, 0, 0
    for _, g in d.groupby(keys, dropna=False, sort=False):
        a = g.loc[g["_a"], "_v"].to_numpy(float)
        b = g.loc[g["_b"], "_v"].to_numpy(float)
        if len(a) and len(b) and min(len(a), len(b)) > min(best_a, best_b):
            best_a, best_b = len(a), len(b)
        if len(a) >= MIN_RUNS and len(b) >= MIN_RUNS:
            strata.append((a, b))
            n_a += len(a)
            n_b += len(b)
    return strata, n_a, n_b, best_a, best_b


def _decide(
    spec: _Spec, strata, n_a: int, n_b: int, best: tuple[int, int], *, kind: str,
    margin: float, missing: str | None, seed: int, n_boot: int,
) -> ClaimResult:
    res = ClaimResult(spec.id, spec.claim, spec.source, spec.statistic, spec.rule)
    if missing:
        res.reason = missing
        return res
    if not strata:
        a, b = best
        if a == 0 and b == 0:
            res.reason = "no setting holds both groups of runs"
        else:
            res.reason = (f"fewer than {MIN_RUNS} runs per side in every matched setting "
                          f"(best: {a} vs {b})")
        return res
    est, b_lo, b_hi = stratified_bootstrap(strata, n_boot=n_boot, seed=seed)
    _, t_lo, t_hi = stratified_welch(strata)
    lo, hi = min(b_lo, t_lo), max(b_hi, t_hi)
    res.estimate, res.ci_low, res.ci_high = est, lo, hi
    res.strata, res.n_a, res.n_b = len(strata), n_a, n_b
    ci = f"95% CI [{lo:+.2f}, {hi:+.2f}]"
    if kind == "equivalence":
        if -margin <= lo and hi <= margin:
            res.verdict, res.reason = SUPPORTED, f"{ci} within ±{margin:g}"
        elif hi < -margin or lo > margin:
            res.verdict, res.reason = CONTRADICTED, f"{ci} entirely outside ±{margin:g}"
        else:
            res.reason = f"{ci} crosses ±{margin:g}"
    else:
        if lo > 0:
            res.verdict, res.reason = SUPPORTED, f"{ci} above 0"
        elif hi < 0:
            res.verdict, res.reason = CONTRADICTED, f"{ci} below 0"
        elif -margin < lo and hi < margin:
            res.verdict, res.reason = CONTRADICTED, f"{ci} within ±{margin:g}: no effect"
        else:
            res.reason = f"{ci} includes 0"
    return res


def _gap_claim(data: ReportData, spec: _Spec, label: str, seed: int, n_boot: int
               ) -> ClaimResult:
    runs = data.runs
    missing = None
    if runs.empty or data.acc_col is None:
        missing = "no completed runs with an accuracy"
    elif not (runs["precision"] == "fp32").any():
        missing = "no fp32 runs"
    elif not (runs["precision"] == label).any():
        missing = f"no {label} runs"
    if missing:
        return _decide(spec, [], 0, 0, (0, 0), kind="equivalence", margin=ACC_MARGIN,
                       missing=missing, seed=seed, n_boot=n_boot)
    runs = longest_budget(runs)
    strata, n_a, n_b, *best = _strata(runs, data.axes, runs["precision"] == label,
                                      runs["precision"] == "fp32", runs["acc"])
    res = _decide(spec, strata, n_a, n_b, tuple(best), kind="equivalence", margin=ACC_MARGIN,
                  missing=None, seed=seed, n_boot=n_boot)
    # A diverged run has no accuracy, so it cannot enter a mean; say so rather than hide it
    # (it counts in the stability claims).
    lost = runs["precision"].isin([label, "fp32"]) & runs["acc"].isna()
    if lost.any():
        by = runs[lost]["precision"].value_counts()
        parts = ", ".join(f"{n} {p}" for p, n in by.items())
        res.reason += f"; runs without accuracy (diverged) left out: {parts}"
    return res


def claim_2232(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT) -> ClaimResult:
    return _gap_claim(data, SPECS["C1"], "2.32", seed, n_boot)


def claim_bnn(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT) -> ClaimResult:
    return _gap_claim(data, SPECS["C5"], "bnn", seed, n_boot)


def claim_epochs(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT) -> ClaimResult:
    spec = SPECS["C2"]
    kw = {"kind": "effect", "margin": EPOCH_MARGIN, "seed": seed, "n_boot": n_boot}
    runs = data.runs
    missing = None
    if runs.empty:
        missing = "no completed runs"
    elif data.curves.empty:
        missing = "no per-epoch curves"
    elif not (runs["precision"] == "fp32").any():
        missing = "no fp32 runs to define the accuracy to reach"
    elif "width" not in data.axes or runs.groupby("model")["width"].nunique().max() < 2:
        missing = "no width variation: every model has one size"
    if missing:
        return _decide(spec, [], 0, 0, (0, 0), missing=missing, **kw)
    em = epochs_to_match(data.frames, data.axes, MATCH_TOLERANCE)
    em = em.assign(value=em["epoch_reached"].astype(float).fillna(em["budget"] + 1))
    # Extra epochs over the fp32 runs of the same setting: a small fp32 model may be slow too.
    base = (em[em["grid"] == "fp32"].groupby(data.axes, dropna=False)["value"].median()
            .rename("fp32_epochs").reset_index())
    em = em[em["grid"].isin(["zero", "no zero"])].merge(base, on=data.axes, how="inner")
    if em.empty:
        return _decide(spec, [], 0, 0, (0, 0), missing="no quantised run has a matched fp32 "
                       "setting with curves", **kw)
    em = em.assign(value=em["value"] - em["fp32_epochs"])
    keys = [a for a in data.axes if a != "width"] + ["precision"]
    size = em.groupby([a for a in keys if a != "precision"], dropna=False)["width"]
    small = em["width"] == size.transform("min")
    large = (em["width"] == size.transform("max")) & ~small
    strata, n_a, n_b, *best = _strata(em, keys, small, large, em["value"])
    return _decide(spec, strata, n_a, n_b, tuple(best), missing=None, **kw)


def claim_augment(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT) -> ClaimResult:
    spec = SPECS["C3"]
    kw = {"kind": "effect", "margin": INSTABILITY_MARGIN, "seed": seed, "n_boot": n_boot}
    runs = data.runs
    low = runs[runs["grid"].isin(["zero", "no zero"]) & (runs["bits"] <= LOW_RES_MAX_BITS)] \
        if len(runs) else runs
    missing = None
    low, short = _long_enough(low)
    if low.empty:
        missing = short or f"no level-grid runs at ≤ {LOW_RES_MAX_BITS:g} bits"
    elif low["augment"].nunique() < 2 or not (low["augment"] == "none").any():
        missing = "no augmentation variation (needs runs with augment = none and with another)"
    if missing:
        return _decide(spec, [], 0, 0, (0, 0), missing=missing, **kw)
    keys = [a for a in data.axes if a != "augment"] + ["precision"]
    strata, n_a, n_b, *best = _strata(low, keys, low["augment"] != "none",
                                      low["augment"] == "none", run_instability(low))
    return _decide(spec, strata, n_a, n_b, tuple(best), missing=None, **kw)


def claim_zero(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT) -> ClaimResult:
    spec = SPECS["C4"]
    kw = {"kind": "effect", "margin": INSTABILITY_MARGIN, "seed": seed, "n_boot": n_boot}
    runs = data.runs
    grids = runs[runs["grid"].isin(["zero", "no zero"]) & runs["k"].notna()] if len(runs) \
        else runs
    grids, short = _long_enough(grids)
    missing = None
    if grids.empty and short:
        missing = short
    elif grids.empty or grids["grid"].nunique() < 2:
        missing = "needs both zero-free (2^k) and zero-included (2^k+1) grids"
    if missing:
        return _decide(spec, [], 0, 0, (0, 0), missing=missing, **kw)
    keys = [*data.axes, "k"]
    strata, n_a, n_b, *best = _strata(grids, keys, grids["grid"] == "no zero",
                                      grids["grid"] == "zero", run_instability(grids))
    res = _decide(spec, strata, n_a, n_b, tuple(best), missing=None, **kw)
    worst = max((float(np.mean(a)) for a, _ in strata), default=None)
    if worst is not None and worst < INSTABILITY_MARGIN:
        res.verdict = INCONCLUSIVE
        res.reason = (f"the zero-free runs were stable (mean instability ≤ {worst:.2f} points "
                      f"in every setting): nothing for zero to restore; {res.reason}")
    return res


CLAIMS: tuple[Callable[..., ClaimResult], ...] = (
    claim_2232, claim_epochs, claim_augment, claim_zero, claim_bnn,
)


def evaluate_claims(data: ReportData, *, seed: int = 0, n_boot: int = N_BOOT_DEFAULT) -> list[ClaimResult]:
    return [check(data, seed=seed, n_boot=n_boot) for check in CLAIMS]


def rules_markdown() -> str:
    """How every verdict is reached, for report.md (the same constants the code uses)."""
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
        "row says what is missing.",
        "",
        "Accuracy is the report's accuracy column in points. Instability of a run (C3, C4) is "
        "its largest epoch-to-epoch drop in validation accuracy, in points; a diverged run "
        "counts as losing its whole best accuracy; runs of fewer than "
        f"{MIN_STABILITY_EPOCHS} epochs are left out. Diverged runs have no accuracy and are left "
        "out of C1 and C5 (the row says how many). Epochs to match (C2) is the first epoch a "
        f"run's validation accuracy comes within {MATCH_TOLERANCE:g} point of its setting's "
        "mean final fp32 accuracy (never reached = its budget + 1), minus the same for the "
        "fp32 runs of the setting.",
        "",
    ]
    for spec in SPECS.values():
        lines.append(f"- **{spec.id}** ({spec.source}): {spec.claim}. Statistic: "
                     f"{spec.statistic}. Rule: {spec.rule}.")
    return "\n".join(lines)


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """Numbers kept as numbers (for claims.csv); tables.claims_table formats them for reading."""
    return pd.DataFrame([r.__dict__ for r in results])
