"""Accuracy against weight resolution, one panel per model: mean over seeds with its 95% interval,
the fp32 mean and band as the reference."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from suite.report import style
from suite.report.figures.common import (
    FigureOutput,
    Unavailable,
    acc_name,
    bits_axis,
    bottom_of_column,
    core_range,
    edge_marks,
    fixed_text,
    fp32_reference,
    grid_line_handles,
    grid_lines,
    panel_grid,
    resolution_legend,
    x_bits,
)
from suite.report.frame import order_precisions
from suite.report.stats import ReportData, headline_slice, summarize


def accuracy_vs_bits(data: ReportData, width: float = style.DOUBLE_COLUMN_IN) -> FigureOutput:
    runs = data.runs.dropna(subset=["acc"]) if len(data.runs) else data.runs
    if runs.empty:
        raise Unavailable("no completed run reports an accuracy")
    df, fixed = headline_slice(runs, data.axes)
    agg = summarize(df, ["family", "precision", "bits", "grid"], "acc")
    # An accuracy lies in [0, 100]: a t interval of 2-3 seeds can run past either end.
    agg = agg.assign(ci_lo=agg["ci_lo"].clip(0.0, 100.0), ci_hi=agg["ci_hi"].clip(0.0, 100.0))
    families = sorted(agg["family"].unique())
    labels = order_precisions(agg["precision"])
    pal = style.palette(labels)
    fig, axes = panel_grid(len(families), width, row_height=1.9, extra=0.8)
    notes = []
    cut = outliers = 0
    for ax, fam in zip(axes.flat, families, strict=False):
        a = agg[agg["family"] == fam].assign(xb=lambda d: x_bits(d))
        grid_lines(ax, a, "xb")
        if not fp32_reference(ax, a[a["precision"] == "fp32"]):
            notes.append(f"accuracy vs bits, {fam}: no fp32 runs, so no 32-bit reference line")
        q = a[a["precision"] != "fp32"]
        lo, hi = _limits(a)
        ax.set_ylim(lo, hi)
        c, o = _points(ax, q, pal, lo, hi)
        cut, outliers = cut + c, outliers + o
        bits_axis(ax, label=bottom_of_column(axes, ax, len(families)))
        if not bottom_of_column(axes, ax, len(families)):
            ax.set_xlabel("")
        ax.set_ylabel(f"{acc_name(data)} (%)" if ax.get_subplotspec().is_first_col() else "")
        style.panel_title(ax, fam)
    has_fp32 = bool((agg["precision"] == "fp32").any())
    extra = grid_line_handles(list(agg["grid"].unique()))
    if has_fp32:
        extra.append(Line2D([], [], color="black", ls=":", lw=1, label="fp32 mean, 95% band"))
    resolution_legend(fig, [p for p in labels if p != "fp32"], extra=extra)
    if (agg["n"] <= 1).all():
        notes.append("accuracy vs bits: one run per configuration, so no confidence intervals")
    caption = (
        f"{acc_name(data).capitalize()} against weight resolution, one panel per model. Markers: "
        "mean over seeds, bars: 95% t-interval (cut to 0-100%); circles/solid = zero-free grids "
        "(2^k levels), squares/dashed = zero-included grids (2^k+1 levels), star = binary "
        "normalized (bnn, drawn at 1 bit, nudged left). Dotted line and band: fp32 mean and its "
        "95% interval. Each panel's range covers its means apart from far outliers"
        + (": an arrowhead with a number at the panel edge is a mean outside the range, at that "
           "value" if outliers else "")
        + ("; a bar that ends in a short tick at the edge runs on past it (few seeds)"
           if cut else "") + "." + fixed_text(fixed)
    )
    return FigureOutput("accuracy_vs_bits", "Accuracy vs bits", caption, fig, notes)


def _limits(a: pd.DataFrame) -> tuple[float, float]:
    """Y limits from the means (fp32 included) without far outliers, padded; room for modest
    intervals, never for huge ones (with 2-3 seeds a t interval can span 0-100%)."""
    lo, hi = core_range(a["mean"])
    if pd.isna(lo):
        return 0.0, 100.0
    pad = max(2.0, 0.15 * (hi - lo))
    core = a[(a["mean"] >= lo) & (a["mean"] <= hi)]
    ci_lo, ci_hi = core["ci_lo"].dropna(), core["ci_hi"].dropna()
    lo2 = min(lo - pad, max(float(ci_lo.min()), lo - 2 * pad)) if len(ci_lo) else lo - pad
    hi2 = max(hi + pad, min(float(ci_hi.max()), hi + 2 * pad)) if len(ci_hi) else hi + pad
    return max(lo2, 0.0), min(hi2, 100.0)


def _points(ax: Axes, q: pd.DataFrame, pal: dict[str, str], lo: float,
            hi: float) -> tuple[int, int]:
    """Mean markers and their intervals inside [lo, hi]; a mean outside it is drawn at the edge
    with its value, an interval running past an edge ends there with a tick. Returns (cut
    intervals, outlying means)."""
    inside = q[(q["mean"] >= lo) & (q["mean"] <= hi)]
    ok = inside["ci_lo"].notna()
    lo_c, hi_c = inside.loc[ok, "ci_lo"].clip(lo, hi), inside.loc[ok, "ci_hi"].clip(lo, hi)
    colors = [pal[p] for p in inside.loc[ok, "precision"]]
    ax.vlines(inside.loc[ok, "xb"], lo_c, hi_c, colors=colors, lw=1.0, zorder=2)
    cut_mask = (inside.loc[ok, "ci_lo"] < lo) | (inside.loc[ok, "ci_hi"] > hi)
    for xb, l0, h0, l1, h1, c in zip(inside.loc[ok, "xb"], inside.loc[ok, "ci_lo"],
                                     inside.loc[ok, "ci_hi"], lo_c, hi_c, colors, strict=True):
        for raw, shown in ((l0, l1), (h0, h1)):
            if raw != shown:  # cut at the edge: a short cap says the bar goes on
                ax.hlines(shown, xb - 0.08, xb + 0.08, colors=c, lw=1.0, zorder=2,
                          clip_on=False)
    sns.scatterplot(data=inside, x="xb", y="mean", hue="precision", palette=pal, style="grid",
                    markers=style.GRID_MARKERS, ax=ax, legend=False, s=26, edgecolor="0.15",
                    linewidth=0.4, zorder=3)
    outside = q[~q.index.isin(inside.index)]
    n_out = edge_marks(ax, outside["xb"], outside["mean"],
                       [pal[p] for p in outside["precision"]], lo, hi)
    return int(cut_mask.sum()), n_out
