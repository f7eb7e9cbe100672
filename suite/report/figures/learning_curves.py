"""Validation curves as small multiples: one row per model, one column per bit budget k, so a
panel holds the zero-free grid of k (2^k levels, solid, circles) and the zero-included one
(2^k+1, dashed, squares) with fp32 as the reference line, and bnn beside k = 1: two or three
curves a panel instead of ten, told apart by dash and marker as well as colour."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from suite.report import style
from suite.report.figures.common import (
    LINE_DASHES,
    FigureOutput,
    Unavailable,
    fixed_text,
    resolution_legend,
    single,
)
from suite.report.frame import bit_budget, order_precisions
from suite.report.stats import ReportData, headline_slice, points

_OTHER = "other"  # labels with no bit budget (neither 2^k nor 2^k+1 levels, nor fp32 or bnn)


def _column(label: str) -> str | None:
    """The column a resolution is drawn in: its k, bnn with k = 1, fp32 in every column (None)."""
    if label == "fp32":
        return None
    if label == "bnn":
        return "1"
    k = bit_budget(label)
    return str(k) if k is not None else _OTHER


def learning_curves(data: ReportData, width: float = style.DOUBLE_COLUMN_IN) -> FigureOutput:
    curves = data.curves
    if curves.empty or data.runs.empty:
        raise Unavailable("no per-epoch curves were recorded")
    df, fixed = headline_slice(data.runs, data.axes)
    c = curves[curves["run_id"].isin(df["run_id"])].merge(
        df[["run_id", "family"]], on="run_id")
    text = c["task"] == "text"
    c = c.assign(y=np.where(text, c["val_loss"], points(c["val_acc"])))
    c = c.dropna(subset=["y"])
    if c.empty:
        raise Unavailable("the curves hold no validation values")
    families = sorted(c["family"].unique())
    labels = order_precisions(c["precision"])
    pal = style.palette(labels)
    columns = sorted({col for p in labels if (col := _column(p)) is not None},
                     key=lambda k: (k == _OTHER, float(k) if k != _OTHER else math.inf)) or [None]
    # Mean and sd per epoch with pandas (seaborn's estimator is ~10x slower on 100k rows).
    agg = (c.groupby(["family", "precision", "grid", "epoch"], sort=True)["y"]
           .agg(["mean", "std"]).reset_index())
    narrow = single(width)
    fig, axes = style.new_figure(len(families), len(columns), width=width,
                                 height=(0.95 if narrow else 1.25) * len(families) + 0.9,
                                 sharex="row", sharey="row")
    for i, fam in enumerate(families):
        cf = c[c["family"] == fam]
        af = agg[agg["family"] == fam]
        is_text = (cf["task"] == "text").all()
        for j, col in enumerate(columns):
            ax = axes[i, j]
            shown = [p for p in labels if _column(p) in (col, None)]
            _panel(ax, af[af["precision"].isin(shown)], cf[cf["precision"].isin(shown)], pal)
            if i == 0:
                style.panel_title(ax, "other" if col == _OTHER else
                                  "all" if col is None else f"k = {col}")
            if j == 0:
                ax.set_ylabel(f"{fam}\n" + ("val. loss (nats)" if is_text else "val. acc. (%)"))
            if i == len(families) - 1:
                ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(3 if narrow else 5, integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(3 if narrow else 4))
    extra = [Line2D([], [], ls="", marker="x", color="0.2", label="diverged (last epoch)")] \
        if (c["status"] == "diverged").any() else []
    resolution_legend(fig, labels, kind="line", extra=extra)
    caption = (
        "Validation accuracy (validation loss for language models) per epoch, one row per "
        "model and one column per bit budget k: each panel holds the zero-free grid of that k "
        "(2^k levels; solid, circles) and the zero-included one (2^k+1 levels; dashed, "
        "squares), bnn (dotted, stars) beside k = 1, and fp32 (black) in every panel as the "
        "reference. Line: mean over seeds, band: ± one standard deviation across seeds; ×: last "
        "epoch of a run that diverged (later epochs average the remaining seeds). Each row "
        "shares its axes." + fixed_text(fixed)
    )
    return FigureOutput("learning_curves", "Learning curves", caption, fig)


def _panel(ax: Axes, agg: pd.DataFrame, runs: pd.DataFrame, pal: dict[str, str]) -> None:
    n_epochs = int(agg["epoch"].nunique()) if len(agg) else 1
    every = max(1, math.ceil(n_epochs / 6))  # a few markers per line, not one per epoch
    for label, g in agg.groupby("precision", sort=False):
        grid = str(g["grid"].iloc[0])
        x = g["epoch"].to_numpy(float)
        ax.fill_between(x, g["mean"] - g["std"], g["mean"] + g["std"], color=pal[label],
                        alpha=0.15, lw=0)
        dash = LINE_DASHES.get(grid, "")
        ax.plot(x, g["mean"].to_numpy(float), color=pal[label], ls=(0, dash) if dash else "-",
                lw=1.0 if label != "fp32" else 0.9, marker=style.GRID_MARKERS.get(grid, "o"),
                # Zero-included markers half a step later: equal curves still show both.
                ms=3.0, mec="0.15", mew=0.3,
                markevery=(every // 2 if grid == "zero" else 0, every),
                zorder=2 if label == "fp32" else 3)
    # Mark where diverged runs stop: their curves end there, not at the budget.
    div = runs[runs["status"] == "diverged"].sort_values("epoch").groupby("run_id").tail(1)
    if len(div):
        ax.scatter(div["epoch"], div["y"], marker="x", s=18, linewidths=1.0, zorder=4,
                   c=[pal[p] for p in div["precision"]])
