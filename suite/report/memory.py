"""Accuracy at equal stored bytes: which resolution makes the best use of a model's memory.

The cost of a run is its stored bytes (``stored_bytes``: the packed model, model.bsw, with the
quantised weights at their real bits and everything kept at fp32 beside them, the size
``bitsweep pack`` reports as ``file_bytes``). A *setting* is everything but the width, the seed and
the resolution: (dataset, model, quantiser = ``scale_rule``, ``keep_fp32``, and any other swept
axis). Within a setting each resolution has a *curve*: its accuracy at each width it was trained
at, against the stored bytes of that width.

The accuracy a resolution reaches at a budget B is read off its own curve, linearly in log bytes
between the two adjacent widths whose sizes bracket B, seed by seed (seeds paired by their number,
so a seed's value at B is (1 - t) acc(w_i) + t acc(w_i+1), t = log(B / b_i) / log(b_i+1 / b_i)).
It is never extrapolated: a budget outside the sizes a resolution was trained at is *not
measured* (``NOT_MEASURED``), and a resolution at one width is measured at its own size only.
The mean over seeds and its 95% t interval follow from the seeds' values.

fp32 and bnn runs do not depend on the quantiser (it places level grids only), and fp32 not on
``keep_fp32`` either: a sweep runs them once, and they join every quantiser's (and keep_fp32's)
setting of their dataset and model (``SHARED``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from suite.report.claims.strata import MIN_RUNS, longest_budget
from suite.report.frame import order_precisions
from suite.report.stats import ReportData, stratified_welch, t_halfwidth

NOT_MEASURED = "not measured"
KIB = 1024.0
# Columns a setting always has (a study that never recorded keep_fp32 ran with its default).
SETTING_BASE = ("dataset", "model", "family", "scale_rule", "keep_fp32")
# Per resolution kind, the setting columns its runs do not depend on.
SHARED: dict[str, tuple[str, ...]] = {"fp32": ("scale_rule", "keep_fp32"), "bnn": ("scale_rule",)}
_DEFAULTS = {"scale_rule": "gauss", "keep_fp32": "none"}


# --- the runs --------------------------------------------------------------------------------


def memory_runs(data: ReportData) -> tuple[pd.DataFrame, list[str]]:
    """The runs the analysis reads (completed, with an accuracy and stored bytes, at each model's
    longest epoch budget; fp32 and bnn runs copied into every setting they serve, ``SHARED``)
    and the setting columns."""
    runs = data.runs
    if runs.empty or "stored_bytes" not in runs:
        return runs.iloc[0:0], list(SETTING_BASE)
    runs = runs.dropna(subset=["acc", "stored_bytes"])
    runs = runs[runs["stored_bytes"] > 0]
    runs = longest_budget(runs)
    for col, default in _DEFAULTS.items():
        if col not in runs:
            runs = runs.assign(**{col: default})
        runs = runs.assign(**{col: runs[col].astype(object).where(runs[col].notna(), default)
                              .astype(str)})
    if "width" not in runs:
        runs = runs.assign(width=np.nan)
    runs = runs.assign(width=runs["width"].astype(float).fillna(1.0))
    others = [a for a in data.axes if a not in (*SETTING_BASE, "width", "task")]
    setting = [*SETTING_BASE, *others]
    keep = [*setting, "precision", "grid", "width", "seed", "run_id", "acc", "stored_bytes"]
    return _share_references(runs[[c for c in keep if c in runs]]), setting


def _share_references(runs: pd.DataFrame) -> pd.DataFrame:
    """fp32 and bnn runs copied to every combination of their SHARED columns that the other
    runs of their dataset and model (and of the same value of every other setting column) have
    and they lack; a sweep that ran them per value keeps its own."""
    for grid, cols in SHARED.items():
        runs = _spread(runs, grid, list(cols))
    return runs


def _spread(runs: pd.DataFrame, grid: str, cols: list[str]) -> pd.DataFrame:
    copies = [runs]
    by = ["dataset", "model", *[c for c in _DEFAULTS if c not in cols]]
    for _, g in runs.groupby(by, dropna=False, sort=False):
        refs = g[g["grid"] == grid]
        if refs.empty:
            continue
        have = set(refs[cols].itertuples(index=False, name=None))
        missing = set(g.loc[g["grid"] != grid, cols].itertuples(index=False, name=None)) - have
        common = refs[cols].value_counts().index[0]
        source = refs[(refs[cols] == pd.Series(common, index=cols)).all(axis=1)]
        copies += [source.assign(**dict(zip(cols, value, strict=True)))
                   for value in sorted(missing)]
    return pd.concat(copies, ignore_index=True) if len(copies) > 1 else runs


# --- curves and interpolation ----------------------------------------------------------------


@dataclass
class Curve:
    """One resolution in one setting: sizes (bytes, ascending) and per width its seeds' accuracy
    (rows: widths in the order of ``sizes``; columns: ``seeds``; NaN where a seed is missing)."""

    setting: tuple
    precision: str
    widths: np.ndarray
    sizes: np.ndarray
    seeds: np.ndarray
    acc: np.ndarray

    @property
    def span(self) -> tuple[float, float]:
        return float(self.sizes[0]), float(self.sizes[-1])

    def at(self, budget: float) -> np.ndarray | None:
        """Each seed's accuracy at ``budget`` bytes (``at_budget``); None: not measured."""
        return at_budget(self.sizes, self.acc, budget)


def at_budget(sizes: Sequence[float], acc: np.ndarray, budget: float,
              rtol: float = 1e-9) -> np.ndarray | None:
    """Per seed (columns of ``acc``; rows: the widths, in the order of ascending ``sizes``), the
    accuracy at ``budget`` bytes, linear in log bytes between the two adjacent widths that bracket
    it. None when ``budget`` lies outside [sizes[0], sizes[-1]] (never extrapolated: not
    measured); NaN for a seed missing at either width."""
    sizes = np.asarray(sizes, dtype=float)
    acc = np.asarray(acc, dtype=float)
    if acc.ndim == 1:
        acc = acc[:, None]
    lo, hi = sizes[0] * (1 - rtol), sizes[-1] * (1 + rtol)
    if not lo <= budget <= hi:
        return None
    if len(sizes) == 1:
        return acc[0].copy()
    i = int(np.clip(np.searchsorted(sizes, budget, side="right") - 1, 0, len(sizes) - 2))
    a, b = sizes[i], sizes[i + 1]
    t = 0.0 if b == a else float(np.clip(math.log(budget / a) / math.log(b / a), 0.0, 1.0))
    return (1 - t) * acc[i] + t * acc[i + 1]


def curves(runs: pd.DataFrame, setting: Sequence[str]) -> list[Curve]:
    """Every (setting, resolution) curve of ``runs`` (memory_runs), widths ordered by size. A
    width's size is the mean stored bytes of its runs (the packed size varies by a few bytes with
    the values stored); two runs of one width and seed (none in a sweep) are averaged."""
    out = []
    setting = list(setting)
    seed = runs["seed"].astype(float).fillna(-1.0) if "seed" in runs else \
        pd.Series(0.0, index=runs.index)
    d = runs.assign(_seed=seed)
    for key, g in d.groupby([*setting, "precision"], dropna=False, sort=True):
        cell = g.groupby(["width", "_seed"])[["acc", "stored_bytes"]].mean()
        size = cell["stored_bytes"].groupby(level="width").mean().sort_values()
        seeds = np.sort(cell.index.get_level_values("_seed").unique().to_numpy(float))
        acc = np.full((len(size), len(seeds)), np.nan)
        wi = size.index.get_indexer(cell.index.get_level_values("width"))
        si = np.searchsorted(seeds, cell.index.get_level_values("_seed").to_numpy(float))
        acc[wi, si] = cell["acc"].to_numpy(float)
        out.append(Curve(tuple(key[:-1]), str(key[-1]), size.index.to_numpy(float),
                         size.to_numpy(float), seeds, acc))
    return out


def budget_ladder(sizes: Sequence[float]) -> list[float]:
    """Budgets in bytes: every power of 2 KiB from the smallest to the largest of ``sizes``; where
    that gives fewer than 3, every power of sqrt(2) KiB instead."""
    sizes = [s for s in sizes if s > 0 and math.isfinite(s)]
    if not sizes:
        return []
    lo, hi = math.log2(min(sizes) / KIB), math.log2(max(sizes) / KIB)
    for step in (1.0, 0.5):
        ks = np.arange(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1) * step
        if len(ks) >= 3 or step == 0.5:
            return [float(KIB * 2.0 ** k) for k in ks]
    return []


# --- budgets and winners ---------------------------------------------------------------------


@dataclass
class Budgets:
    """The analysis of a study: per setting, resolution and budget the seeds' accuracy
    (``values``), and the tidy frames of it (``points``: the curves; ``at``: one row per setting,
    budget and resolution; ``winners``: one per setting and budget where at least two
    resolutions are measured, with the runner-up and whether the lead's Welch 95% interval
    excludes 0, ``distinguishable``; None with fewer than MIN_RUNS seeds a side)."""

    setting: list[str]
    points: pd.DataFrame
    at: pd.DataFrame
    winners: pd.DataFrame
    values: dict[tuple, dict[str, np.ndarray]]  # (setting..., budget) -> precision -> seeds
    widths: bool  # some resolution was trained at more than one width


def _mean_ci(x: np.ndarray) -> tuple[float, float, float, int]:
    x = x[np.isfinite(x)]
    if not len(x):
        return math.nan, math.nan, math.nan, 0
    mean = float(np.mean(x))
    half = float(t_halfwidth(np.std(x, ddof=1) if len(x) > 1 else math.nan, len(x)))
    return mean, mean - half, mean + half, len(x)


_LAST: list[tuple[ReportData, Budgets]] = []  # the claims, a table and two figures ask for it


def analyse(data: ReportData) -> Budgets:
    """Curves, the accuracy of every resolution at every budget of its dataset and model's
    ladder, and the winner of each budget (computed once per ReportData)."""
    if _LAST and _LAST[0][0] is data:
        return _LAST[0][1]
    out = _analyse(data)
    _LAST[:] = [(data, out)]
    return out


def _analyse(data: ReportData) -> Budgets:
    runs, setting = memory_runs(data)
    cs = curves(runs, setting) if len(runs) else []
    pts = []
    for c in cs:
        for w, size, row in zip(c.widths, c.sizes, c.acc, strict=True):
            mean, lo, hi, n = _mean_ci(row)
            pts.append({**dict(zip(setting, c.setting, strict=True)), "precision": c.precision,
                        "width": w, "stored_bytes": size, "kib": size / KIB, "n": n,
                        "mean": mean, "ci_lo": lo, "ci_hi": hi})
    points = pd.DataFrame(pts, columns=[*setting, "precision", "width", "stored_bytes", "kib",
                                        "n", "mean", "ci_lo", "ci_hi"])
    ladders = {}
    for key, g in points.groupby(["dataset", "model"], dropna=False, sort=False):
        ladders[key] = budget_ladder(g["stored_bytes"])
    values: dict[tuple, dict[str, np.ndarray]] = {}
    rows = []
    di, mi = setting.index("dataset"), setting.index("model")
    for c in cs:
        for b in ladders.get((c.setting[di], c.setting[mi]), []):
            v = c.at(b)
            if v is not None:
                values.setdefault((*c.setting, b), {})[c.precision] = v
            mean, lo, hi, n = _mean_ci(v) if v is not None else (math.nan,) * 3 + (0,)
            rows.append({**dict(zip(setting, c.setting, strict=True)), "budget": b,
                         "budget_kib": b / KIB, "precision": c.precision,
                         "measured": v is not None, "n": n, "mean": mean, "ci_lo": lo,
                         "ci_hi": hi})
    at = pd.DataFrame(rows, columns=[*setting, "budget", "budget_kib", "precision", "measured",
                                     "n", "mean", "ci_lo", "ci_hi"])
    multi = any(len(c.widths) > 1 for c in cs)
    return Budgets(setting, points, at, _winners(values, setting), values, multi)


def ranked(cands: dict[str, np.ndarray]) -> list[str]:
    """Resolutions by mean accuracy at one budget, best first (ties: report order)."""
    order = {p: i for i, p in enumerate(order_precisions(cands))}
    means = {p: float(np.nanmean(v)) if np.isfinite(v).any() else -math.inf
             for p, v in cands.items()}
    return sorted(cands, key=lambda p: (-means[p], order[p]))


def difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(a) − mean(b) with its Welch 95% interval (NaN bounds with fewer than MIN_RUNS a
    side): the same interval the claims use for one setting."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < MIN_RUNS or len(b) < MIN_RUNS:
        est = float(np.mean(a) - np.mean(b)) if len(a) and len(b) else math.nan
        return est, math.nan, math.nan
    return stratified_welch([(a, b)])


def _winners(values: dict[tuple, dict[str, np.ndarray]], setting: list[str]) -> pd.DataFrame:
    rows = []
    for key, cands in values.items():
        if len(cands) < 2:  # one resolution measured at this budget: no contest to win
            continue
        order = ranked(cands)
        best = order[0]
        mean, lo, hi, n = _mean_ci(cands[best])
        row = {**dict(zip(setting, key[:-1], strict=True)), "budget": key[-1],
               "budget_kib": key[-1] / KIB, "best": best, "mean": mean, "ci_lo": lo,
               "ci_hi": hi, "n": n, "measured": len(cands)}
        second = order[1]
        est, d_lo, d_hi = difference(cands[best], cands[second])
        row.update(runner_up=second, runner_up_mean=float(np.nanmean(cands[second])),
                   lead=est, lead_lo=d_lo, lead_hi=d_hi,
                   distinguishable=None if math.isnan(d_lo) else bool(d_lo > 0))
        rows.append(row)
    cols = [*setting, "budget", "budget_kib", "best", "mean", "ci_lo", "ci_hi", "n", "measured",
            "runner_up", "runner_up_mean", "lead", "lead_lo", "lead_hi", "distinguishable"]
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values([*setting, "budget"], kind="stable").reset_index(drop=True)

