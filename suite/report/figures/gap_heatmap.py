"""The accuracy gap of every quantised configuration to the fp32 runs of its setting, as a heat
map per augmentation: colour = mean gap, cells whose 95% interval includes 0 drawn pale."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from suite.report import style
from suite.report.figures.common import (
    FigureOutput,
    Unavailable,
    acc_name,
    fixed_text,
    heatmap,
    signed,
    single,
)
from suite.report.frame import order_precisions
from suite.report.stats import ReportData, headline_slice, matched_gaps


def gap_heatmap(data: ReportData, width: float = style.DOUBLE_COLUMN_IN) -> FigureOutput:
    runs = data.runs.dropna(subset=["acc"]) if len(data.runs) else data.runs
    if runs.empty:
        raise Unavailable("no completed run reports an accuracy")
    if not (runs["precision"] == "fp32").any():
        raise Unavailable("no fp32 runs, so there is no 32-bit accuracy to take the gap to")
    df, fixed = headline_slice(runs, data.axes, keep=["augment"])
    gaps = matched_gaps(df, [*data.axes, "family"]).dropna(subset=["gap"])
    if gaps.empty:
        raise Unavailable(
            "no quantised configuration has fp32 runs in the same setting "
            f"({', '.join(data.axes)})"
        )
    augs = sorted(gaps["augment"].unique(), key=lambda a: (a != "none", a))
    cols = order_precisions(gaps["precision"])
    families = sorted(gaps["family"].unique())
    # Robust colour limits: one diverged cell must not wash every other cell out to white.
    vmax = max(2.0, float(np.nanquantile(np.abs(gaps["gap"]), 0.9)))
    # Side by side while each cell keeps ~0.3 in for "-12.3 / ±4.5" at 6 pt; stacked otherwise.
    stacked = len(cols) * len(augs) * 0.3 > width - 1.6
    row_h = 0.3 * len(families) + 0.45
    fig, axes = style.new_figure(len(augs) if stacked else 1, 1 if stacked else len(augs),
                                 width=width,
                                 height=(row_h * len(augs) + 0.5) if stacked else row_h + 0.75,
                                 sharey=True, sharex=stacked)
    mesh = None
    uncertain = 0
    for ax, aug in zip(axes.flat, augs, strict=True):
        mesh, faded = _panel(ax, gaps[gaps["augment"] == aug], families, cols, vmax,
                             mean_only=single(width))
        uncertain += faded
        last_row = not stacked or ax is axes.flat[-1]
        ax.set_xlabel("weight resolution (bits)" if last_row else "")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=0, labelbottom=last_row, bottom=last_row,
                       labelsize=style.MIN_FONT_PT if single(width) else 7)
        ax.tick_params(axis="y", rotation=0, left=ax is axes.flat[0] or stacked)
        ax.grid(False)
        style.panel_title(ax, f"augmentation: {aug}")
    low, high = np.nanmin(gaps["gap"]) < -vmax, np.nanmax(gaps["gap"]) > vmax
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (bool(low), bool(high)), "neither")
    fig.colorbar(mesh, ax=list(axes.flat), label="gap to fp32 (points)",
                 shrink=0.7 if stacked else 0.9, aspect=25,
                 pad=0.01, extend=extend)
    notes = []
    if gaps["gap_lo"].isna().all():
        notes.append("gap heat map: fewer than 2 runs per side everywhere, so no intervals")
    clip = {"both": f"beyond ±{vmax:.1f}", "min": f"below -{vmax:.1f}",
            "max": f"above +{vmax:.1f}"}.get(extend)
    caption = (
        f"{acc_name(data).capitalize()} gap to the fp32 runs of the same setting (points; "
        "negative = worse than fp32), mean difference over seeds and (in the 7 in version) the "
        "half-width of its Welch 95% interval (±). "
        + ("Pale cells with grey text: the interval includes 0 (or there is none), so the sign "
           "of the gap is not settled. " if uncertain else "")
        + (f"The colour scale is cut at the pointed end(s) of the colour bar: gaps {clip} "
           "take its end colour. " if clip else "")
        + "Blank: no matched runs." + fixed_text(fixed)
    )
    return FigureOutput("gap_heatmap", "Accuracy gap to fp32", caption, fig, notes)


def _panel(ax: Axes, g: pd.DataFrame, families: list[str], cols: list[str], vmax: float, *,
           mean_only: bool):
    """One augmentation's heat map: the mean gap (and ± its interval's half-width unless
    ``mean_only``, for 3.5 in cells), pale where the interval includes 0. Returns the mesh and
    the number of pale cells."""
    gap = g.pivot_table(index="family", columns="precision", values="gap", dropna=False)
    lo = g.pivot_table(index="family", columns="precision", values="gap_lo", dropna=False)
    hi = g.pivot_table(index="family", columns="precision", values="gap_hi", dropna=False)
    gap, lo, hi = (t.reindex(index=families, columns=cols) for t in (gap, lo, hi))
    half = (hi - lo) / 2
    # Series.map per column: DataFrame.map needs pandas >= 2.1, the project allows 2.0.
    text = gap.apply(lambda col: col.map(signed))
    spread = half.apply(lambda col: col.map(lambda v: f"{v:.1f}"))
    plain = half.isna().to_numpy() | mean_only
    annot = np.where(gap.isna(), "", np.where(plain, text, text + "\n±" + spread))
    # Pale: the interval includes 0, so the sign of the gap is not settled (or unknown).
    faded = gap.notna().to_numpy() & ~((lo > 0) | (hi < 0)).to_numpy()
    mesh = heatmap(ax, gap, annot, cmap="RdBu", vmin=-vmax, vmax=vmax, faded=faded)
    return mesh, int(faded.sum())
