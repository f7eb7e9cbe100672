"""Matching runs: the strata a claim compares, each holding the two groups of runs that differ in
the one thing the claim is about.

Runs are matched within a *stratum*: the same model, dataset, width, augmentation, epochs, ...
(the setting axes) and, where it applies, the same resolution. A stratum counts only with at
least MIN_RUNS finite values on each side.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_RUNS = 2  # per side and stratum: below this there is no spread to judge a difference by
MIN_STABILITY_EPOCHS = 3  # the largest epoch-to-epoch drop needs at least two changes to pick from


def longest_budget(runs: pd.DataFrame) -> pd.DataFrame:
    """Each model's runs at its largest epoch budget (runs of unknown budget kept): the papers'
    accuracy claims are about trained models; a short budget measures claim C2 instead."""
    if runs.empty or runs["epochs"].isna().all():
        return runs
    top = runs.groupby(["dataset", "model"], dropna=False)["epochs"].transform("max")
    return runs[runs["epochs"].isna() | (runs["epochs"] == top)]


def long_enough(df: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
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
class Strata:
    """Paired groups per counted stratum, their run counts, the largest side sizes seen in any
    stratum holding both sides (to explain an inconclusive verdict), and the models counted."""

    groups: list[tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)
    n_a: int = 0
    n_b: int = 0
    best: tuple[int, int] = (0, 0)
    models: tuple[str, ...] = ()


def strata(
    df: pd.DataFrame, keys: list[str], side_a: pd.Series, side_b: pd.Series, value: pd.Series,
) -> Strata:
    d = df.assign(_v=value, _a=side_a, _b=side_b)
    d = d[d["_a"] | d["_b"]].dropna(subset=["_v"])
    out = Strata()
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
