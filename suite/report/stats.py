"""Statistics shared by figures, tables and claims: per-configuration means with t intervals, gaps
to the matched fp32 runs, a seeded stratified bootstrap, and epochs needed to reach fp32 accuracy.

All accuracies here are in points (percent); ``accuracy_points`` converts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from suite.report.frame import StudyFrames, order_precisions, setting_axes

ACCURACY_CANDIDATES = ("test_acc", "val_acc", "best_val_acc")
CONFIDENCE = 0.95
N_BOOT = 2000
MATCH_TOLERANCE = 1.0  # points under the fp32 mean that still count as reaching it


def accuracy_column(results: pd.DataFrame) -> str | None:
    """The accuracy the report ranks by: held-out test accuracy, else final or best val accuracy."""
    done = results[results["status"].isin(["ok", "diverged"])] if len(results) else results
    for col in ACCURACY_CANDIDATES:
        if col in done and done[col].notna().any():
            return col
    return None


def points(values: pd.Series) -> pd.Series:
    """Fractions -> percent points (runs report accuracy in [0, 1])."""
    return values.astype(float) * 100.0


def completed_with_acc(frames: StudyFrames) -> tuple[pd.DataFrame, str | None]:
    """Completed runs with an ``acc`` column in points (NaN accuracies kept, callers drop them)."""
    done = frames.completed
    col = accuracy_column(frames.results)
    if col is None:
        return done.assign(acc=np.nan), None
    return done.assign(acc=points(done[col])), col


def run_instability(df: pd.DataFrame) -> pd.Series:
    """Instability of each run, in points: its largest epoch-to-epoch fall in validation
    accuracy; a diverged run counts as losing its best accuracy, whatever its last recorded drop
    (it ended unusable). The measure of claims C3/C4 and of the stability figure."""
    drop = points(df["max_val_acc_drop"])
    lost = points(df["best_val_acc"])
    diverged = df["diverged"].fillna(False).astype(bool)
    return drop.where(~diverged, np.fmax(drop.fillna(0), lost.fillna(0)))


def run_oscillation(df: pd.DataFrame, curves: pd.DataFrame) -> pd.Series:
    """Weight oscillation of each run of ``df``, in percent: its result's ``oscillation`` (the
    EMA at the last epoch), else the last value its curves recorded; NaN where it was not
    tracked (fp32 runs, tracking off, studies from before the measure existed)."""
    out = pd.Series(np.nan, index=df.index, dtype=float)
    if "oscillation" in df:
        out = pd.to_numeric(df["oscillation"], errors="coerce").astype(float)
    if "oscillation" in curves and curves["oscillation"].notna().any():
        c = curves.dropna(subset=["oscillation"]).sort_values("epoch")
        out = out.fillna(df["run_id"].map(c.groupby("run_id")["oscillation"].last()))
    return points(out)


def t_halfwidth(std: pd.Series | np.ndarray, n: pd.Series | np.ndarray) -> np.ndarray:
    """Half-width of the t interval of a mean; NaN where n < 2 (no spread to estimate)."""
    n = np.asarray(n, dtype=float)
    std = np.asarray(std, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = sps.t.ppf(0.5 + CONFIDENCE / 2, np.where(n >= 2, n - 1, np.nan))
        return q * std / np.sqrt(n)


def summarize(df: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Per group: n (finite values), mean, std, and the 95% t interval of the mean."""
    by = list(by)
    if df.empty:
        return pd.DataFrame(columns=[*by, "n", "mean", "std", "ci_lo", "ci_hi"])
    g = df.groupby(by, dropna=False, sort=False)[value]
    out = g.agg(n="count", mean="mean", std="std").reset_index()
    half = t_halfwidth(out["std"], out["n"])
    out["ci_lo"] = out["mean"] - half
    out["ci_hi"] = out["mean"] + half
    return out


def matched_gaps(df: pd.DataFrame, axes: Sequence[str], value: str = "acc") -> pd.DataFrame:
    """Per setting and resolution: mean of ``value`` minus the mean of the fp32 runs of the same
    setting, with a Welch 95% interval (it stays honest with 2-3 seeds, where a bootstrap of so
    few values is too narrow). Rows without a matched fp32 group have NaN gaps."""
    axes = list(axes)
    s = summarize(df, [*axes, "precision"], value)
    if s.empty:
        return s.assign(gap=[], gap_lo=[], gap_hi=[], n_ref=[])
    ref = s[s["precision"] == "fp32"].drop(columns=["precision", "ci_lo", "ci_hi"])
    ref = ref.rename(columns={"n": "n_ref", "mean": "mean_ref", "std": "std_ref"})
    out = s[s["precision"] != "fp32"].merge(ref, on=axes, how="left") if axes else s
    out["gap"] = out["mean"] - out["mean_ref"]
    va = out["std"] ** 2 / out["n"]
    vb = out["std_ref"] ** 2 / out["n_ref"]
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = (va + vb) ** 2 / (va**2 / (out["n"] - 1) + vb**2 / (out["n_ref"] - 1))
        q = sps.t.ppf(0.5 + CONFIDENCE / 2, dof)
    half = q * np.sqrt(va + vb)
    out["gap_lo"] = out["gap"] - half
    out["gap_hi"] = out["gap"] + half
    return out


def stratified_bootstrap(
    strata: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean over strata of mean(a) - mean(b), with a percentile bootstrap 95% interval.

    Each side is resampled within its stratum, so settings with more runs do not dominate and a
    setting's fp32 runs are only ever compared with the same setting's quantised runs.
    """
    rng = np.random.default_rng(seed)
    est = float(np.mean([np.mean(a) - np.mean(b) for a, b in strata]))
    boots = np.zeros(n_boot)
    for a, b in strata:
        ia = rng.integers(0, len(a), size=(n_boot, len(a)))
        ib = rng.integers(0, len(b), size=(n_boot, len(b)))
        boots += a[ia].mean(axis=1) - b[ib].mean(axis=1)
    boots /= len(strata)
    alpha = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return est, float(lo), float(hi)


def stratified_welch(
    strata: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[float, float, float]:
    """Mean over strata of mean(a) - mean(b), with a Welch-Satterthwaite 95% t interval.

    The normal-theory companion of ``stratified_bootstrap``: with 2-3 values a side, resampling
    sees only a handful of distinct means and its interval is far too narrow; this one widens
    with the t quantile of the few degrees of freedom. A side of one value adds no variance (its
    stratum should not be counted by callers in the first place).
    """
    k = len(strata)
    est = float(np.mean([np.mean(a) - np.mean(b) for a, b in strata]))
    var, dof_den = 0.0, 0.0
    for a, b in strata:
        for x in (a, b):
            if len(x) > 1:
                v = float(np.var(x, ddof=1)) / len(x) / k**2
                var += v
                dof_den += v**2 / (len(x) - 1)
    lo, hi = welch_bounds(est, var, dof_den)
    return est, float(lo), float(hi)


def welch_bounds(est: object, var: object, dof_den: object) -> tuple[np.ndarray, np.ndarray]:
    """The 95% bounds est ± t(dof) sqrt(var), with Satterthwaite's dof = var² / dof_den (dof_den:
    the sum of each variance term squared over its degrees of freedom); a point where there is no
    variance. Vectorised: the claims' fragility resamples compute thousands at once."""
    est, var, dof_den = (np.asarray(v, dtype=float) for v in (est, var, dof_den))
    spread = (var > 0) & (dof_den > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(spread, var**2 / np.where(spread, dof_den, 1.0), 1.0)
        half = np.where(spread, sps.t.ppf(0.5 + CONFIDENCE / 2, dof) * np.sqrt(var), 0.0)
    return est - half, est + half


def epochs_to_match(
    frames: StudyFrames, axes: Sequence[str], tolerance: float = MATCH_TOLERANCE
) -> pd.DataFrame:
    """First epoch at which each completed run's val accuracy reaches its setting's fp32 level.

    The fp32 level is the mean final val accuracy of the setting's fp32 runs, minus ``tolerance``
    points. Returns one row per run: run_id, axes, precision, bits, grid, params, seed, target,
    ``epoch_reached`` (NA when never reached) and ``budget`` (epochs the run trained).
    fp32 runs get a value too (when did they reach their own mean), the baseline to compare with.
    """
    axes = list(axes)
    cols = list(dict.fromkeys(["run_id", *axes, "precision", "bits", "grid", "params", "seed",
                               "target", "epoch_reached", "budget"]))
    curves = frames.curves
    done = frames.completed
    if curves.empty or done.empty or "val_acc" not in curves:
        return pd.DataFrame(columns=cols)
    final = curves.dropna(subset=["val_acc"]).sort_values("epoch").groupby("run_id").tail(1)
    final = final[["run_id", "val_acc"]].rename(columns={"val_acc": "final"})
    fp = done[done["precision"] == "fp32"][["run_id", *axes]].merge(final, on="run_id")
    if fp.empty:
        return pd.DataFrame(columns=cols)
    target = fp.groupby(axes, dropna=False)["final"].mean().reset_index()
    target["target"] = points(target["final"]) - tolerance
    keep = dict.fromkeys(["run_id", *axes, "precision", "bits", "grid", "params", "seed", "epochs"])
    runs = done[list(keep)]
    runs = runs.merge(target[[*axes, "target"]], on=axes, how="inner")
    c = curves[["run_id", "epoch", "val_acc"]].merge(runs[["run_id", "target"]], on="run_id")
    budget = c.groupby("run_id")["epoch"].max().rename("budget")
    hit = c[points(c["val_acc"]) >= c["target"]]
    first = hit.groupby("run_id")["epoch"].min().rename("epoch_reached")
    out = runs.merge(budget, on="run_id", how="inner").merge(first, on="run_id", how="left")
    out["budget"] = out["budget"].where(out["budget"].notna(), out["epochs"])
    return out[cols]


def precision_order(df: pd.DataFrame) -> list[str]:
    return order_precisions(df["precision"]) if "precision" in df and len(df) else []


# An lr sweep (lrstress) multiplies the default upward to find where training breaks: the
# headline trains at its smallest lr, the one the others stress.
_RULES = {"epochs": ("largest", max), "width": ("largest", max), "lr": ("smallest", min)}


def _reference(g: pd.DataFrame, axis: str) -> object:
    # First the values whose runs cover the most resolutions: a width sweep at a few resolutions
    # beside a full resolution grid at width 1 must not leave the headline figure with four.
    d = g.dropna(subset=[axis])
    cover = d.groupby(d[axis].astype(str))["precision"].nunique()
    values = d.loc[d[axis].astype(str).isin(cover[cover == cover.max()].index), axis]
    if axis == "augment" and (values == "none").any():
        return "none"
    if axis in _RULES:
        return _RULES[axis][1](values.unique())
    counts = values.astype(str).value_counts()
    top = counts[counts == counts.max()].index.min()
    return values[values.astype(str) == top].iloc[0]


def headline_slice(
    df: pd.DataFrame, axes: Sequence[str], keep: Sequence[str] = ()
) -> tuple[pd.DataFrame, list[str]]:
    """One value per varying setting axis (outside ``keep``), chosen per model and dataset.

    The paper-like setting, among the values whose runs cover the most resolutions: no
    augmentation when there is such a run, the largest epoch budget, the largest width, the most
    common value of anything else. Returns the slice and a list of
    phrases saying what was held fixed (for captions).
    """
    fixed = [a for a in axes if a not in keep and a not in ("task", "dataset", "model")]
    if df.empty or not fixed:
        return df, []
    chosen: dict[str, dict[str, str]] = {a: {} for a in fixed}
    parts = []
    groups = list(df.groupby(["dataset", "model"], dropna=False, sort=False))
    for (_, model), g in groups:
        for a in fixed:
            if g[a].dropna().nunique() <= 1:
                continue
            ref = _reference(g, a)
            g = g[g[a] == ref]
            chosen[a][str(model)] = _show(ref)
        parts.append(g)
    phrases = []
    for a, by_model in chosen.items():
        values = set(by_model.values())
        if not values:
            continue
        if len(values) == 1:
            where = "" if len(by_model) == len(groups) else f" ({', '.join(sorted(by_model))})"
            phrases.append(f"{a} = {values.pop()}{where}")
        else:
            rule = _RULES.get(a, ("most common",))[0]
            phrases.append(f"{a} = {rule} per model")
    return pd.concat(parts), phrases


def _show(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- tuned studies ---------------------------------------------------------------------------
# A sweep with ``tune:`` runs several trials per grid cell, each with values the tuner sampled
# (suite/sweep/spec.py). They are not seeds: the report compares the best trial of each cell by
# the sweep's objective, as the tuner would pick it, and the tuned fields are never setting axes
# (a sampled lr is no lr grid, so no lr-stress analysis either).


@dataclass(frozen=True)
class Tuning:
    """How a tuned study was reduced to one trial per cell (and seed)."""

    params: tuple[str, ...]  # the tuned RunConfig fields
    metric: str  # the objective the best trial is picked by
    direction: str  # maximize | minimize
    trials: int  # completed trials of the study
    kept: int  # best trials compared, one per cell and seed

    def describe(self) -> str:
        """One sentence for report.md."""
        best = "highest" if self.direction == "maximize" else "lowest"
        return (f"{', '.join(f'`{p}`' for p in self.params)} sampled by the tuner; each cell "
                f"(and seed) is compared by its trial of the {best} `{self.metric}` (the sweep's "
                f"objective): {self.kept} of {self.trials} completed trials. The others are in "
                "results.csv (`best_in_cell` false) but in no mean, claim or figure; tuned "
                "values are neither settings nor an lr-stress axis")


def tune_objective(spec: dict | None) -> tuple[tuple[str, ...], str, str] | None:
    """(tuned fields, objective metric, direction) of a stored sweep spec with ``tune:``;
    None for an untuned study. Defaults as suite/sweep/spec.py's: val_acc, and minimize for a
    loss or perplexity."""
    tune = (spec or {}).get("tune")
    if not isinstance(tune, dict):
        return None
    params = tuple(k for k in tune if k != "trials")
    if not params:
        return None
    objective = (spec or {}).get("objective") or {}
    metric = str(objective.get("metric", "val_acc"))
    minimize = "loss" in metric or "ppl" in metric
    direction = str(objective.get("direction", "minimize" if minimize else "maximize"))
    return params, metric, direction


def best_of_cells(frames: StudyFrames, params: Sequence[str], metric: str,
                  direction: str) -> tuple[StudyFrames, Tuning]:
    """``frames`` with each cell's completed trials (a cell and seed) reduced to the best by
    ``metric``: a diverged trial or one without the metric ranks last, ties go to the earlier
    trial. Unfinished trials stay (the failed-trials table lists them)."""
    res = frames.results
    done = res["status"].isin(["ok", "diverged"])
    if "cell" in res and res.loc[done, "cell"].notna().all():
        keys = ["cell", "seed"]
    else:  # run directories: the config without the tuned fields names the cell
        keys = [k for k in (*frames.config_keys, "precision") if k not in params and k in res]
    score = pd.to_numeric(res[metric], errors="coerce") if metric in res else pd.Series(
        np.nan, index=res.index)
    score = score.where(~res["diverged"].fillna(False).astype(bool))
    ranked = res[done].assign(
        _s=score[done] if direction == "minimize" else -score[done],
        _t=res.loc[done, "trial"].astype(float))
    ranked = ranked.sort_values(["_s", "_t"], na_position="last", kind="stable")
    best = set(ranked.drop_duplicates(keys)["run_id"])
    keep = ~done | res["run_id"].isin(best)
    kept = dataclasses.replace(
        frames, results=res[keep].reset_index(drop=True),
        curves=frames.curves[frames.curves["run_id"].isin(set(res.loc[keep, "run_id"]))]
        .reset_index(drop=True))
    return kept, Tuning(tuple(params), metric, direction, int(done.sum()), len(best))


@dataclass
class ReportData:
    """What every figure, table and claim starts from, computed once per build."""

    frames: StudyFrames
    runs: pd.DataFrame  # completed runs, ``acc`` in points, ``family`` = facet label
    acc_col: str | None
    axes: list[str]
    order: list[str] = field(default_factory=list)
    tuning: Tuning | None = None  # a tuned study: frames and runs hold each cell's best trial

    @property
    def curves(self) -> pd.DataFrame:
        return self.frames.curves


def prepare(frames: StudyFrames) -> ReportData:
    tuning = None
    tuned = tune_objective(frames.spec)
    if tuned is not None:
        frames, tuning = best_of_cells(frames, *tuned)
    runs, acc_col = completed_with_acc(frames)
    axes = [a for a in setting_axes(frames) if tuning is None or a not in tuning.params]
    if len(runs):
        many = runs["dataset"].nunique(dropna=True) > 1
        family = runs["model"].fillna("?").astype(str)
        if many:
            family = family + " (" + runs["dataset"].fillna("?").astype(str) + ")"
        runs = runs.assign(family=family)
    else:
        runs = runs.assign(family=pd.Series(dtype=object))
    return ReportData(frames, runs, acc_col, axes, precision_order(runs), tuning)
