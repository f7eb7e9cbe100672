"""Where training breaks: the largest learning rate at which a setting still trains, for studies
that sweep ``lr`` over multiples of the default (the lr-stress axis). Only an lr grid axis is one:
learning rates a tuner sampled (``tune:``) are not a setting axis at all (stats.Tuning).

Definitions (report.md, the max_stable_lr table and the claims C3-lr / C4-lr state them from the
constants here):

- A *setting* is every setting axis but lr (``stress_axes``), at one resolution: the runs that
  differ in lr and seed only. Only settings with at least MIN_LRS learning rates are analysed.
- Its *reference accuracy* is the best, over its lrs, of the mean accuracy (points) of the runs
  at that lr that did not diverge; its *best lr* is the (smallest) lr that reaches it.
- An lr of a setting is *stable* when no seed diverged at it and, from the best lr up, the mean
  accuracy of its runs is within STABLE_ACC_MARGIN points of the reference. Below the best lr
  only divergence counts: a lower accuracy there is a budget too short for a small lr (the
  default study's 1x is under-trained in 8 epochs), not instability. One run is stable by the same
  rule with its own accuracy.
- The *max stable lr* is the largest lr such that it and every smaller lr of the sweep are
  stable: a frontier walked up from the smallest lr (``walk``), so a lucky run that trains again
  past a break does not move the limit up.
- Per seed the walk goes over that seed's runs alone; its value is log2 of the max stable lr as a
  multiple of the setting's smallest lr. Not stable even at the smallest: one grid step below it,
  -log2(lr_2 / lr_1) (status NONE). Stable at every lr: log2(largest / smallest), *censored*
  (status CENSORED): the true limit lies at or above the largest lr the sweep tried. A seed that
  lacks a run at an lr before its walk ends has no value (a failed trial is not a break).

``lr`` stays an ordinary setting axis everywhere else (frame.setting_axes adds it when it repeats
across runs), so the other claims compare runs at the same lr.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from suite.report.stats import ReportData

STABLE_ACC_MARGIN = 5.0  # points under the setting's best mean accuracy that still count as trained
MIN_LRS = 2  # learning rates a setting needs before it has a frontier
NO_LR_VARIATION = f"no learning-rate variation (needs at least {MIN_LRS} lr values per setting)"

NONE, INSIDE, CENSORED, MISSING = "none stable", "inside", "censored", "missing runs"

# Columns that describe a setting beyond its keys (each a function of the resolution or model).
_CARRIED = ("family", "grid", "k", "bits")


def stress_axes(data: ReportData) -> list[str]:
    """The setting axes that define an lr-stress setting: every one but lr."""
    return [a for a in data.axes if a != "lr"]


def setting_keys(data: ReportData) -> list[str]:
    return [*stress_axes(data), "precision"]


def multiple_label(multiple: float) -> str:
    """``3.0000000004`` -> ``"3"``: how a multiple of the smallest lr is named in columns."""
    return f"{multiple:.3g}"


def _swept(data: ReportData) -> pd.DataFrame:
    """Completed runs of the settings with at least MIN_LRS learning rates, with ``_sid`` (the
    setting's number) and ``_div`` (diverged, as a plain bool)."""
    runs = data.runs
    # Only an lr grid axis stresses the lr: a tuned lr is not an axis (stats.Tuning), nor is one
    # that never repeats across runs (frame.setting_axes).
    if runs.empty or "lr" not in data.axes or runs["lr"].isna().all():
        return runs.iloc[0:0].assign(_sid=pd.Series(dtype=int), _div=pd.Series(dtype=bool))
    runs = runs[runs["lr"].notna()]
    sid = runs.groupby(setting_keys(data), dropna=False, sort=False).ngroup()
    runs = runs.assign(_sid=sid.to_numpy(), _div=runs["diverged"].fillna(False).astype(bool))
    n_lrs = runs.groupby("_sid")["lr"].transform("nunique")
    return runs[n_lrs >= MIN_LRS]


def has_lr_variation(data: ReportData) -> bool:
    return not _swept(data).empty


def _describe(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per setting (index ``_sid``): its keys and the columns carried with them."""
    cols = list(dict.fromkeys([*keys, *(c for c in _CARRIED if c in runs)]))
    return runs.drop_duplicates("_sid").set_index("_sid")[cols]


def lr_levels(data: ReportData) -> pd.DataFrame:
    """One row per setting and lr, in lr order: the setting's keys, ``_sid``, lr, multiple (of
    the setting's smallest lr), runs, diverged (count), div_share, acc (mean points of the runs
    that did not diverge; NaN when all did), reference (the setting's best acc), best_lr (the lr
    that reaches it) and stable."""
    runs = _swept(data)
    keys = setting_keys(data)
    if runs.empty:
        return pd.DataFrame(columns=[*keys, *_CARRIED, "_sid", "lr", "multiple", "runs",
                                     "diverged", "div_share", "acc", "reference", "best_lr",
                                     "stable"])
    lv = (runs.assign(_ok=runs["acc"].where(~runs["_div"]))
          .groupby(["_sid", "lr"], sort=True)
          .agg(runs=("run_id", "size"), diverged=("_div", "sum"), acc=("_ok", "mean"))
          .reset_index())
    lv = lv.join(_describe(runs, keys), on="_sid")
    by = lv.groupby("_sid")
    lv["multiple"] = lv["lr"] / by["lr"].transform("min")
    lv["div_share"] = lv["diverged"] / lv["runs"]
    lv["reference"] = by["acc"].transform("max")
    lv["best_lr"] = lv["_sid"].map(lv[lv["acc"] == lv["reference"]].groupby("_sid")["lr"].min())
    lv["stable"] = (lv["diverged"] == 0) & _trained(lv["lr"], lv["acc"], lv["best_lr"],
                                                     lv["reference"])
    return lv


def _trained(lr: pd.Series, acc: pd.Series, best_lr: pd.Series, reference: pd.Series) -> pd.Series:
    """Accuracy good enough to count as stable: anything below the best lr (under-training is not
    instability), within the margin of the reference from it up. A NaN accuracy (every run
    diverged) compares False."""
    return (lr < best_lr) | (acc >= reference - STABLE_ACC_MARGIN)


def walk(grid: Sequence[float], stable: dict[float, bool]) -> tuple[int, str]:
    """The frontier along ``grid`` (ascending lrs): the index of the max stable lr (-1: none)
    and its status, NONE, INSIDE or CENSORED; MISSING when an lr before the first unstable one
    has no verdict in ``stable`` (no run there)."""
    last = -1
    for i, lr in enumerate(grid):
        if lr not in stable:
            return last, MISSING
        if not stable[lr]:
            return last, NONE if last < 0 else INSIDE
        last = i
    return last, CENSORED


def _log2_multiple(grid: Sequence[float], index: int) -> float:
    """Log2 of the frontier as a multiple of the smallest lr; one grid step below it for -1."""
    if index < 0:
        return -math.log2(grid[1] / grid[0])
    return math.log2(grid[index] / grid[0])


def setting_frontier(data: ReportData) -> pd.DataFrame:
    """One row per setting: keys, ``_sid``, lrs (how many), smallest, largest, max_stable_lr
    (NaN when not even the smallest lr is stable), max_stable_multiple, log2_multiple and
    frontier (NONE, INSIDE or CENSORED)."""
    lv = lr_levels(data)
    keys = setting_keys(data)
    if lv.empty:
        return pd.DataFrame(columns=["_sid", *keys, "lrs", "smallest", "largest", "max_stable_lr",
                                     "max_stable_multiple", "log2_multiple", "frontier"])
    rows = {}
    for sid, g in lv.groupby("_sid", sort=True):
        grid = g["lr"].tolist()
        index, status = walk(grid, dict(zip(grid, g["stable"].tolist(), strict=True)))
        best = grid[index] if index >= 0 else float("nan")
        rows[sid] = {"lrs": len(grid), "smallest": grid[0], "largest": grid[-1],
                     "max_stable_lr": best, "max_stable_multiple": best / grid[0],
                     "log2_multiple": _log2_multiple(grid, index), "frontier": status}
    out = _describe(lv, keys).join(pd.DataFrame.from_dict(rows, orient="index"))
    return out.rename_axis("_sid").reset_index()


def seed_frontier(data: ReportData) -> pd.DataFrame:
    """One row per setting and seed with a value: keys, carried columns, seed, ``value`` (log2
    of the max stable multiple, see the module docstring), ``status`` and ``censored``.
    Seeds whose walk hits a missing run are left out."""
    runs = _swept(data)
    keys = setting_keys(data)
    cols = [*keys, *_CARRIED, "_sid", "seed", "value", "status", "censored"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    lv = lr_levels(data)
    first = lv.drop_duplicates("_sid").set_index("_sid")
    ok = ~runs["_div"] & _trained(runs["lr"], runs["acc"], runs["_sid"].map(first["best_lr"]),
                                  runs["_sid"].map(first["reference"]))
    per = runs.assign(_ok=ok).groupby(["_sid", "seed", "lr"], sort=True)["_ok"].all()
    grids = lv.groupby("_sid", sort=True)["lr"].agg(list)
    rows = []
    for (sid, seed), s in per.groupby(level=[0, 1], sort=True):
        grid = grids[sid]
        stable = dict(zip(s.index.get_level_values("lr"), s.to_numpy(), strict=True))
        index, status = walk(grid, stable)
        if status != MISSING:
            rows.append({"_sid": sid, "seed": seed, "value": _log2_multiple(grid, index),
                         "status": status, "censored": status == CENSORED})
    out = pd.DataFrame(rows, columns=["_sid", "seed", "value", "status", "censored"])
    out = out.join(_describe(runs, keys), on="_sid")
    return out[[c for c in cols if c in out]]


def run_max_stable_lr(data: ReportData) -> pd.Series:
    """The max stable lr of each completed run's setting, indexed by run_id (results.csv's
    ``max_stable_lr``): NaN outside an lr sweep and where not even the smallest lr is stable."""
    runs = _swept(data)
    if runs.empty:
        return pd.Series(dtype=float, name="max_stable_lr")
    best = setting_frontier(data).set_index("_sid")["max_stable_lr"].astype(float)
    return pd.Series(runs["_sid"].map(best).to_numpy(dtype=float), index=runs["run_id"],
                     name="max_stable_lr")


def frontier_table(data: ReportData) -> pd.DataFrame:
    """The numbers of tables/max_stable_lr.csv: one row per setting, its frontier, and per lr
    multiple ``m`` (``per_lr_multiples``) the runs there (``runs_<m>x``), the share of them that
    diverged (``diverged_<m>x``) and the mean accuracy of the others (``acc_<m>x``, points)."""
    front = setting_frontier(data)
    if front.empty:
        return front
    lv = lr_levels(data)
    lv = lv.assign(_m=lv["multiple"].map(multiple_label))
    order = sorted(lv["_m"].unique(), key=float)
    out = front.set_index("_sid").join(lv.groupby("_sid")["runs"].sum())
    for name, col in (("runs", "runs"), ("diverged", "div_share"), ("acc", "acc")):
        t = lv.pivot_table(index="_sid", columns="_m", values=col, aggfunc="first", dropna=False)
        out = out.join(t.reindex(columns=order).rename(columns=lambda m, n=name: f"{n}_{m}x"))
    lead = [*setting_keys(data), "grid", "k", "bits", "runs", "lrs", "smallest", "largest",
            "max_stable_lr", "max_stable_multiple", "frontier"]
    per_lr = [f"{n}_{m}x" for m in order for n in ("runs", "diverged", "acc")]
    return out.reset_index(drop=True)[lead + per_lr]


def per_lr_multiples(table: pd.DataFrame) -> list[str]:
    """The lr multiples (labels, ascending) that ``frontier_table`` has columns for."""
    return [c[len("runs_"):-1] for c in table.columns if c.startswith("runs_")]
