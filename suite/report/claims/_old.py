"""The papers' claims, each checked against the study's runs with a written-down rule.

Every claim compares two groups of runs that differ in one thing only (resolution, model size,
augmentation, or zero in the grid). Runs are matched within a *stratum*: the same model, dataset,
width, augmentation, epochs, ... (the setting axes) and, where it applies, the same resolution.
The statistic is the mean over strata of mean(A) - mean(B). Its 95% interval is the wider of a
seeded stratified bootstrap interval (stats.stratified_bootstrap) and the Welch-Satterthwaite t
interval (stats.stratified_welch): the bootstrap alone is far too narrow with the 2-3 seeds a
sweep usually has. A stratum counts only with at least MIN_RUNS finite values on each side; with
no such stratum the verdict is inconclusive and says why.

Verdicts come from the interval alone, by rules that exclude one another (``RULES``): exactly one
holds for any interval, so the order in which they are checked cannot decide. The margin comes
first: an effect claim whose interval lies within ±margin is *no meaningful effect* however
clearly it excludes 0 (a rerun of the default study moved C4 from [-0.00, +0.65] to
[+0.07, +0.70], which an "above 0 wins" order read as supported).

Fragility. Each verdict (inconclusive ones included) carries ``holds``: the share of seed-bootstrap
resamples of the study in which the same verdict comes out. A resample redraws the values of each
side within each counted stratum with replacement, then recomputes the statistic, its interval and
the verdict (the C4 precondition included). Two choices keep that honest and cheap:

- The redrawn deviations from their side's mean are scaled by sqrt(n / (n - 1)). A plain
  bootstrap of n values has on average (n - 1)/n of their variance: with 2-3 seeds its intervals
  come out a fifth to a third narrower than the study's, and a verdict at a margin looks surer
  than it is (two thirds of the resamples instead of half, tests/report/test_fragility.py).
  Scaled, a resample's mean varies by the estimated standard error and its interval is as wide
  as the study's on average.
- A resample's interval is the Welch interval only. Nesting the 2000-resample bootstrap in each of
  N_RESAMPLES resamples would cost 2,000,000 resamples per claim; with a handful of seeds the Welch
  interval is the wider of the two (its t quantile and n - 1 divisor), so the hull it replaces is
  the Welch interval already (it contains the bootstrap interval in every row of both committed
  studies). Resampling costs about 0.4 CPU s per 10,000-run study (bench/bench_report.py).

Leave-one-seed-out was the alternative: with 3 seeds it gives three perturbations (shares of 0,
33, 67 or 100%), and each leaves 2 seeds, whose t intervals are several times wider: it measures
what fewer seeds would conclude, not what another run of the same study would. A verdict that
holds in under FRAGILE_BELOW of the resamples is marked fragile.

Instability of a run (claims 3 and 4) is its largest drop in validation accuracy between two
epochs (``max_val_acc_drop``, points); a diverged run counts as losing its best accuracy, since it
ended unusable whatever its last recorded drop was. Instability needs epochs to show: runs with
fewer than MIN_STABILITY_EPOCHS epochs are left out of claims 3 and 4.

C3-lr and C4-lr put claims 3 and 4 on the learning-rate stress axis: their value per run is the
log2 of its setting's max stable learning rate, per seed (suite/report/lrstress.py defines it).
A value censored at the sweep's top can hide an effect above it, so when every value a claim
needs to move is censored the verdict is inconclusive (``_Test.censored``); that holds in every
resample too, since a resample redraws the same censored values.

A study with several quantisers (``scale_rule``) gets C1-C4 (C3-lr and C4-lr too) once per
quantiser, and one with several bnn readings (``conv_norm``) gets C5 once per reading
(``SPLITS``): pooled, a reading that trains well and one that does not average to a verdict about
neither.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from suite.report.lrstress import (
    NO_LR_VARIATION,
    STABLE_ACC_MARGIN,
    seed_frontier,
    stress_axes,
)
from suite.report.stats import (
    MATCH_TOLERANCE,
    ReportData,
    epochs_to_match,
    run_instability,
    stratified_bootstrap,
    stratified_welch,
    welch_bounds,
)

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
OPPOSITE = "opposite"
INCONCLUSIVE = "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, OPPOSITE, INCONCLUSIVE)

MIN_RUNS = 2  # per side and stratum: below this there is no spread to judge a difference by
ACC_MARGIN = 2.0  # points: "about the same accuracy" means within +-2 points
INSTABILITY_MARGIN = 1.0  # points of val-accuracy drop: smaller differences are "no effect"
EPOCH_MARGIN = 1.0  # epochs: smaller differences in epochs-to-match are "no effect"
LOW_RES_MAX_BITS = 2.5  # "low resolution" for claim 3: level grids of at most 2.32 bits
LR_MARGIN = 1.0  # log2 of the max stable lr: differences under a factor of 2 are "no effect"
N_BOOT_DEFAULT = 2000
MIN_STABILITY_EPOCHS = 3  # the largest epoch-to-epoch drop needs at least two changes to pick from
# 1000 resamples put a share near 80% within about ±1.3 points (its Monte Carlo standard error).
N_RESAMPLES = 1000
FRAGILE_BELOW = 0.80


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


# --- verdict rules ---------------------------------------------------------------------------


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
RULES: dict[str, tuple[Rule, ...]] = {"effect": EFFECT_RULES, "equivalence": EQUIVALENCE_RULES}


def interval_verdicts(kind: str, low: Any, high: Any, margin: float) -> np.ndarray:
    """The verdict of each 95% interval [low, high] by the rules of ``kind`` ("effect" or
    "equivalence"), as an object array; an interval with a NaN bound is inconclusive."""
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
class _Test:
    kind: str  # effect | equivalence
    margin: float
    unit: str
    # C4: inconclusive when side A's mean stays under this in every stratum (nothing to restore)
    stable_below: float | None = None
    # C3-lr, C4-lr: when the values the claim needs to move are all censored at the top of the
    # lr sweep, inconclusive; the text says which values, for the rule
    censored: str | None = None


@dataclass(frozen=True)
class _Spec:
    id: str
    claim: str
    source: str
    statistic: str
    test: _Test

    @property
    def rule(self) -> str:
        text = rule_text(self.test.kind, self.test.margin, self.test.unit)
        first = []
        if self.test.stable_below is not None:
            first.append(f"the zero-free runs were stable to begin with (mean instability under "
                         f"{self.test.stable_below:g} point in every matched setting: nothing to "
                         "restore)")
        if self.test.censored is not None:
            first.append(self.test.censored)
        if not first:
            return text
        return f"first, inconclusive whenever {' or '.join(first)}; otherwise {text}"


_ACC = _Test("equivalence", ACC_MARGIN, "points")
_INSTABILITY = _Test("effect", INSTABILITY_MARGIN, "points")
_LR = _Test("effect", LR_MARGIN, "log2 lr")
_MSL = ("log2 of the max stable lr per seed, as a multiple of its setting's smallest lr "
        "(1 = a factor of 2)")

SPECS: dict[str, _Spec] = {
    "C1": _Spec(
        "C1", "2.32-bit weights (5 levels) reach about the 32-bit accuracy",
        "arXiv 2502.08795",
        "acc(2.32) − acc(fp32), points, matched settings at each model's largest epoch budget",
        _ACC,
    ),
    "C2": _Spec(
        "C2", "small low-resolution models need more epochs than large ones to match 32-bit",
        "arXiv 2502.08795",
        "extra epochs over fp32 to reach fp32 − 1 pt: smallest − largest width of a model, "
        "per resolution (never reached = budget + 1)",
        _Test("effect", EPOCH_MARGIN, "epoch"),
    ),
    "C3": _Spec(
        "C3", "data augmentation destabilises low-resolution training", "arXiv 2502.08795",
        f"instability (max val-acc drop, points) with − without augmentation, level grids "
        f"≤ {LOW_RES_MAX_BITS:g} bits",
        _INSTABILITY,
    ),
    "C3-lr": _Spec(
        "C3-lr", "data augmentation lowers the max stable learning rate of low-resolution "
        "models more than that of fp32", "arXiv 2502.08795 (claim 3 on the lr-stress axis)",
        f"{_MSL}: without − with augmentation (seeds paired), level grids ≤ "
        f"{LOW_RES_MAX_BITS:g} bits (each resolution its own setting) − fp32 of the same setting",
        dataclasses.replace(_LR, censored=(
            "every low-resolution run stayed stable up to the sweep's largest lr, with and "
            "without augmentation (max stable lr censored: nothing shows it lowered)")),
    ),
    "C4": _Spec(
        "C4", "including zero as a weight value restores stability", "arXiv 2502.08795",
        "instability (max val-acc drop, points) of 2^k levels − 2^k+1 levels, same bit budget k",
        dataclasses.replace(_INSTABILITY, stable_below=INSTABILITY_MARGIN),
    ),
    "C4-lr": _Spec(
        "C4-lr", "zero-included grids stay stable at a higher learning rate than zero-free "
        "grids of the same bit budget", "arXiv 2502.08795 (claim 4 on the lr-stress axis)",
        f"{_MSL}: 2^k+1 levels − 2^k levels, same bit budget k",
        dataclasses.replace(_LR, censored=(
            "the zero-free runs stayed stable up to the sweep's largest lr in every matched "
            "setting (max stable lr censored: a higher one for zero cannot show)")),
    ),
    "C5": _Spec(
        "C5", "binary normalized networks (bnn) reach about the 32-bit accuracy",
        "arXiv 2509.07025",
        "acc(bnn) − acc(fp32), points, matched settings at each model's largest epoch budget",
        _ACC,
    ),
}


# --- matching runs ---------------------------------------------------------------------------


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


@dataclass
class _Strata:
    """Paired groups per counted stratum, their run counts, the largest side sizes seen in any
    stratum holding both sides (to explain an inconclusive verdict), and the models counted."""

    groups: list[tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)
    n_a: int = 0
    n_b: int = 0
    best: tuple[int, int] = (0, 0)
    models: tuple[str, ...] = ()


def _strata(
    df: pd.DataFrame, keys: list[str], side_a: pd.Series, side_b: pd.Series, value: pd.Series,
) -> _Strata:
    d = df.assign(_v=value, _a=side_a, _b=side_b)
    d = d[d["_a"] | d["_b"]].dropna(subset=["_v"])
    out = _Strata()
    if d.empty:
        return out
    # Group codes in order of first appearance and a stable sort: each stratum's values in row
    # order, as a groupby loop would give them, without a DataFrame per stratum (10,000 runs).
    codes = d.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    values, in_a, in_b = (d[c].to_numpy()[order] for c in ("_v", "_a", "_b"))
    model = d["model"].astype(str).to_numpy()[order]
    models: set[str] = set()
    for idx in np.split(np.arange(len(order)), bounds):
        a = values[idx][in_a[idx]].astype(float)
        b = values[idx][in_b[idx]].astype(float)
        if len(a) and len(b) and min(len(a), len(b)) > min(out.best):
            out.best = (len(a), len(b))
        if len(a) >= MIN_RUNS and len(b) >= MIN_RUNS:
            out.groups.append((a, b))
            out.n_a += len(a)
            out.n_b += len(b)
            models.add(model[idx[0]])
    out.models = tuple(sorted(models))
    return out


# --- deciding --------------------------------------------------------------------------------


def _reason(test: _Test, verdict: str, lo: float, hi: float) -> str:
    ci, m = f"95% CI [{lo:+.2f}, {hi:+.2f}]", f"{test.margin:g}"
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


_CHUNK = 1 << 21  # values redrawn at once: bounds the memory of a 10,000-run study's resamples


def _redraw(x: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Means and variances (ddof 1) of n redraws with replacement of each row of x (strata of
    one side, all with the same run count m), deviations from the row's mean scaled by
    sqrt(m / (m - 1)) so that a redraw is on average as spread as the row (module docstring)."""
    s, m = x.shape
    picks = x[np.arange(s)[:, None, None], rng.integers(0, m, size=(s, n, m))]
    centre = x.mean(axis=1)[:, None]
    scale = m / (m - 1)
    return centre + (picks.mean(axis=2) - centre) * math.sqrt(scale), \
        picks.var(axis=2, ddof=1) * scale


def verdict_holds(
    groups: Sequence[tuple[np.ndarray, np.ndarray]], test: _Test, verdict: str, *,
    n_resamples: int = N_RESAMPLES, seed: Any = 0,
) -> float:
    """Share of seed-bootstrap resamples of ``groups`` whose verdict is ``verdict``: each side
    redrawn within its stratum, then the statistic, its Welch interval and the verdict again."""
    rng = np.random.default_rng(seed)
    k, n = len(groups), n_resamples
    diff, var, dof_den = np.zeros(n), np.zeros(n), np.zeros(n)
    worst = np.full(n, -np.inf)  # largest side-A mean (C4: anything to restore?)
    by_size: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for a, b in groups:  # strata of equal run counts are redrawn together
        by_size.setdefault((len(a), len(b)), []).append((a, b))
    for same in by_size.values():
        for side, sign in ((0, 1.0), (1, -1.0)):
            x = np.stack([g[side] for g in same])
            step = max(1, _CHUNK // (n * x.shape[1]))
            for i in range(0, len(x), step):
                mean, v = _redraw(x[i:i + step], n, rng)
                v = v / x.shape[1] / k**2
                diff += sign * mean.sum(axis=0)
                var += v.sum(axis=0)
                dof_den += (v**2).sum(axis=0) / (x.shape[1] - 1)
                if sign > 0:
                    worst = np.maximum(worst, mean.max(axis=0))
    lo, hi = welch_bounds(diff / k, var, dof_den)
    got = interval_verdicts(test.kind, lo, hi, test.margin)
    if test.stable_below is not None:
        got[worst < test.stable_below] = INCONCLUSIVE
    return float(np.mean(got == verdict))


@dataclass(frozen=True)
class _Options:
    seed: int = 0
    n_boot: int = N_BOOT_DEFAULT
    n_resamples: int = N_RESAMPLES


def _decide(spec: _Spec, strata: _Strata | None, opts: _Options, missing: str | None = None,
            censored: str | None = None) -> ClaimResult:
    """The row of a claim. ``censored``: why the values are censored (``_Test.censored``'s
    rule holds), or None."""
    res = ClaimResult(spec.id, spec.claim, spec.source, spec.statistic, spec.rule)
    if missing or strata is None:
        res.reason = missing or ""
        return res
    if not strata.groups:
        a, b = strata.best
        res.reason = ("no setting holds both groups of runs" if a == 0 and b == 0 else
                      f"fewer than {MIN_RUNS} runs per side in every matched setting "
                      f"(best: {a} vs {b})")
        return res
    test, groups = spec.test, strata.groups
    est, b_lo, b_hi = stratified_bootstrap(groups, n_boot=opts.n_boot, seed=opts.seed)
    _, t_lo, t_hi = stratified_welch(groups)
    lo, hi = min(b_lo, t_lo), max(b_hi, t_hi)
    res.estimate, res.ci_low, res.ci_high = est, lo, hi
    res.strata, res.n_a, res.n_b = len(groups), strata.n_a, strata.n_b
    res.models = ", ".join(strata.models)
    res.verdict = interval_verdict(test.kind, lo, hi, test.margin)
    res.reason = _reason(test, res.verdict, lo, hi)
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
                              seed=(opts.seed, zlib.crc32(spec.id.encode())))
    res.fragile = res.holds < FRAGILE_BELOW
    return res


# --- the claims ------------------------------------------------------------------------------


def _gap_claim(data: ReportData, spec: _Spec, label: str, opts: _Options) -> ClaimResult:
    runs = data.runs
    missing = None
    if runs.empty or data.acc_col is None:
        missing = "no completed runs with an accuracy"
    elif not (runs["precision"] == "fp32").any():
        missing = "no fp32 runs"
    elif not (runs["precision"] == label).any():
        missing = f"no {label} runs"
    if missing:
        return _decide(spec, None, opts, missing)
    runs = longest_budget(runs)
    strata = _strata(runs, data.axes, runs["precision"] == label, runs["precision"] == "fp32",
                     runs["acc"])
    res = _decide(spec, strata, opts)
    # A diverged run has no accuracy, so it cannot enter a mean; say so rather than hide it
    # (it counts in the stability claims).
    lost = runs["precision"].isin([label, "fp32"]) & runs["acc"].isna()
    if lost.any():
        by = runs[lost]["precision"].value_counts()
        parts = ", ".join(f"{n} {p}" for p, n in by.items())
        res.reason += f"; runs without accuracy (diverged) left out: {parts}"
    return res


def claim_2232(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
               n_resamples: int = N_RESAMPLES) -> ClaimResult:
    return _gap_claim(data, SPECS["C1"], "2.32", _Options(seed, n_boot, n_resamples))


def claim_bnn(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
              n_resamples: int = N_RESAMPLES) -> ClaimResult:
    return _gap_claim(data, SPECS["C5"], "bnn", _Options(seed, n_boot, n_resamples))


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


def claim_epochs(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
                 n_resamples: int = N_RESAMPLES) -> ClaimResult:
    spec, opts = SPECS["C2"], _Options(seed, n_boot, n_resamples)
    missing = _epochs_missing(data)
    if missing:
        return _decide(spec, None, opts, missing)
    em = epochs_to_match(data.frames, data.axes, MATCH_TOLERANCE)
    em = em.assign(value=em["epoch_reached"].astype(float).fillna(em["budget"] + 1))
    # Extra epochs over the fp32 runs of the same setting: a small fp32 model may be slow too.
    base = (em[em["grid"] == "fp32"].groupby(data.axes, dropna=False)["value"].median()
            .rename("fp32_epochs").reset_index())
    em = em[em["grid"].isin(["zero", "no zero"])].merge(base, on=data.axes, how="inner")
    if em.empty:
        return _decide(spec, None, opts, "no quantised run has a matched fp32 setting with "
                       "curves")
    em = em.assign(value=em["value"] - em["fp32_epochs"])
    keys = [a for a in data.axes if a != "width"] + ["precision"]
    size = em.groupby([a for a in keys if a != "precision"], dropna=False)["width"]
    small = em["width"] == size.transform("min")
    large = (em["width"] == size.transform("max")) & ~small
    return _decide(spec, _strata(em, keys, small, large, em["value"]), opts)


def claim_augment(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
                  n_resamples: int = N_RESAMPLES) -> ClaimResult:
    spec, opts = SPECS["C3"], _Options(seed, n_boot, n_resamples)
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
        return _decide(spec, None, opts, missing)
    keys = [a for a in data.axes if a != "augment"] + ["precision"]
    return _decide(spec, _strata(low, keys, low["augment"] != "none", low["augment"] == "none",
                                 run_instability(low)), opts)


def claim_zero(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
               n_resamples: int = N_RESAMPLES) -> ClaimResult:
    spec, opts = SPECS["C4"], _Options(seed, n_boot, n_resamples)
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
        return _decide(spec, None, opts, missing)
    return _decide(spec, _strata(grids, [*data.axes, "k"], grids["grid"] == "no zero",
                                 grids["grid"] == "zero", run_instability(grids)), opts)


# --- claims 3 and 4 on the lr-stress axis ------------------------------------------------------


def _lr_frontiers(data: ReportData) -> tuple[pd.DataFrame, str | None]:
    """Per-seed max stable lr values (lrstress.seed_frontier), or why there are none."""
    ms = seed_frontier(data)
    return ms, NO_LR_VARIATION if ms.empty else None


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


def claim_augment_lr(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
                     n_resamples: int = N_RESAMPLES) -> ClaimResult:
    spec, opts = SPECS["C3-lr"], _Options(seed, n_boot, n_resamples)
    ms, missing = _lr_frontiers(data)
    missing = missing or _augment_lr_missing(ms)
    if missing:
        return _decide(spec, None, opts, missing)
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
    strata = _strata(both, keys, both["_side"], ~both["_side"], both["drop"])
    flags = _strata(both, keys, both["_side"], ~both["_side"],
                    both["both_censored"].astype(float).where(both["drop"].notna()))
    censored = bool(flags.groups) and all(a.all() for a, _ in flags.groups)
    return _decide(spec, strata, opts, censored=spec.test.censored if censored else None)


def claim_zero_lr(data: ReportData, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
                  n_resamples: int = N_RESAMPLES) -> ClaimResult:
    spec, opts = SPECS["C4-lr"], _Options(seed, n_boot, n_resamples)
    ms, missing = _lr_frontiers(data)
    if missing is None:
        ms = ms[ms["grid"].isin(["zero", "no zero"]) & ms["k"].notna()]
        if ms["grid"].nunique() < 2:
            missing = "needs both zero-free (2^k) and zero-included (2^k+1) grids in an lr sweep"
    if missing:
        return _decide(spec, None, opts, missing)
    keys = [*stress_axes(data), "k"]
    zero, free = ms["grid"] == "zero", ms["grid"] == "no zero"
    strata = _strata(ms, keys, zero, free, ms["value"])
    flags = _strata(ms, keys, zero, free, ms["censored"].astype(float))
    censored = bool(flags.groups) and all(b.all() for _, b in flags.groups)
    return _decide(spec, strata, opts, censored=spec.test.censored if censored else None)


CLAIMS: dict[str, Callable[..., ClaimResult]] = {
    "C1": claim_2232, "C2": claim_epochs, "C3": claim_augment, "C3-lr": claim_augment_lr,
    "C4": claim_zero, "C4-lr": claim_zero_lr, "C5": claim_bnn,
}


# --- one row per quantiser and per bnn reading -----------------------------------------------


@dataclass(frozen=True)
class Split:
    """A setting that changes only some runs (``grids``), so the claims about those runs are
    checked once per value of it, each against the unchanged runs (fp32) of the same value."""

    column: str
    grids: tuple[str, ...]
    claims: tuple[str, ...]
    runs: str  # what the changed runs are called, for the statistic
    what: str  # what one value of the column is, for report.md


SPLITS = (
    Split("scale_rule", ("zero", "no zero"), ("C1", "C2", "C3", "C3-lr", "C4", "C4-lr"),
          "level-grid", "quantiser"),
    Split("conv_norm", ("bnn",), ("C5",), "bnn", "bnn reading"),
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


def _split_rows(data: ReportData, cid: str, opts: _Options) -> list[ClaimResult]:
    check = CLAIMS[cid]
    for split in SPLITS:
        values = split_values(data, split)
        if cid not in split.claims or len(values) < 2:
            continue
        rows = []
        for value in values:
            sub, note = _subset(data, split, value)
            res = check(sub, seed=opts.seed, n_boot=opts.n_boot, n_resamples=opts.n_resamples)
            res.id = f"{cid} ({split.column} = {value})"
            res.statistic += f"; {split.runs} runs with {split.column} = {value}"
            res.reason += f"; {note}" if note else ""
            rows.append(res)
        return rows
    return [check(data, seed=opts.seed, n_boot=opts.n_boot, n_resamples=opts.n_resamples)]


def evaluate_claims(data: ReportData, *, seed: int = 0, n_boot: int = N_BOOT_DEFAULT,
                    n_resamples: int = N_RESAMPLES) -> list[ClaimResult]:
    """Every claim in SPECS order: one row each, or one per quantiser / bnn reading (SPLITS)
    when the study has several."""
    opts = _Options(seed, n_boot, n_resamples)
    return [res for cid in CLAIMS for res in _split_rows(data, cid, opts)]


# --- for the report --------------------------------------------------------------------------


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
        "The verdict rules of a claim exclude one another: exactly one holds for any interval, "
        "and the margin comes first. An effect claim (C2-C4, C3-lr, C4-lr) whose interval lies "
        "within the "
        "margin is *contradicted* (no meaningful effect) however clearly it excludes 0; it is "
        "*supported* only when the interval lies above 0 and reaches past the margin, and "
        "*opposite* when it lies below 0 and reaches past the other margin (the effect runs the "
        "other way). An equivalence claim (C1, C5) is *supported* within the margin, "
        "*contradicted* when the interval lies entirely beyond one margin, and *inconclusive* "
        "when it crosses one.",
        "",
        f"*holds*: the share of {N_RESAMPLES} seeded resamples of the study that give the same "
        "verdict. A resample redraws the values of each side within each counted setting with "
        "replacement (deviations from their mean scaled by √(n/(n−1)), so a redraw of 2-3 seeds "
        "is as spread as the seeds), then recomputes the statistic, its Welch interval and the "
        "verdict (C4's nothing-to-restore rule included; the censoring rule of C3-lr and C4-lr, "
        "when it holds, holds in every resample: a redraw picks from the same censored values). "
        "A verdict that holds in under "
        f"{FRAGILE_BELOW:.0%} of them is marked "
        "*(fragile)*: another run of the same study may well give another one.",
        "",
        *_split_lines(),
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
        _lr_paragraph(),
        "",
    ]
    for spec in SPECS.values():
        lines.append(f"- **{spec.id}** ({spec.source}): {spec.claim}. Statistic: "
                     f"{spec.statistic}. Rule: {spec.rule}.")
    return "\n".join(lines)


def _lr_paragraph() -> str:
    return (
        "Max stable learning rate (C3-lr, C4-lr, the max_stable_lr table): a stress setting is "
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


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """Numbers kept as numbers (for claims.csv); tables.claims_table formats them for reading."""
    return pd.DataFrame([r.__dict__ for r in results])
