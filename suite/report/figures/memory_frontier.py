"""Accuracy against stored bytes (suite/report/memory.py): per model family, one line per
resolution through the widths it was trained at, and the winner of each budget marked.

At 7 in: a row per family, a column per quantiser and ``keep_fp32``; at 3.5 in (``width``): a
panel per family for the quantiser and ``keep_fp32`` with the most runs. It replaces the old
memory figure, which put every family on one panel and hid the width.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator
from matplotlib.transforms import blended_transform_factory

from suite.report import style
from suite.report.figures.common import (
    FigureOutput,
    Unavailable,
    acc_name,
    fixed_text,
    log_x,
    resolution_legend,
    single,
)
from suite.report.frame import grid_kind, order_precisions
from suite.report.memory import SETTING_BASE, Budgets, analyse
from suite.report.stats import ReportData

# Markers grow with a model's width (smallest, ..., largest of its family): area in points^2.
_SIZES = (9.0, 36.0)
_WINNER_Y = 0.95  # winner marks sit in a strip at the top of each panel, in axes fraction


def _setting_columns(b: Budgets) -> list[str]:
    return [c for c in b.setting if c not in SETTING_BASE]


def _shown(b: Budgets) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The curves and winners of one setting per family, quantiser and keep_fp32: the one whose
    resolutions have the most widths (other settings are in the winners table), and what was
    held fixed, for the caption."""
    pts = b.points.dropna(subset=["mean"])
    # only families where some resolution was trained at more than one width
    fams = pts.groupby("family")["width"].nunique()
    pts = pts[pts["family"].isin(fams[fams > 1].index)]
    if pts.empty:
        raise Unavailable("no width axis: every resolution was trained at one width, so there is "
                          "no curve of accuracy over stored bytes")
    others = _setting_columns(b)
    panel = ["family", "scale_rule", "keep_fp32"]
    keep = []
    fixed = set()
    for _, g in pts.groupby(panel, sort=False):
        if others:
            # an axis a family does not use is NaN in its rows: a value like any other here
            keyed = g[others].astype(object).where(g[others].notna(), "–")
            values = keyed.apply(tuple, axis=1)
            best = values.value_counts(sort=False).idxmax()
            g = g[values == best]
            fixed.update(f"{c} = {v:g}" if isinstance(v, float) else f"{c} = {v}"
                         for c, v in zip(others, best, strict=True)
                         if b.points[c].nunique(dropna=False) > 1)
        keep.append(g)
    pts = pd.concat(keep)
    key = [*b.setting]
    win = b.winners.merge(pts[key].drop_duplicates(), on=key) if len(b.winners) else b.winners
    return pts, win, sorted(fixed)


def _panel(ax: Axes, pts: pd.DataFrame, win: pd.DataFrame, pal: dict[str, str]) -> None:
    """One setting: a line per resolution through its widths (marker area by width rank, 95%
    intervals as bars), dotted budget lines, and at the top the winner of each budget."""
    ranks = {w: i for i, w in enumerate(sorted(pts["width"].unique()))}
    top = max(len(ranks) - 1, 1)
    for label in order_precisions(pts["precision"]):
        g = pts[pts["precision"] == label].sort_values("kib")
        grid = grid_kind(label) or ""
        dash = style.GRID_DASHES.get(grid, "")
        ax.plot(g["kib"], g["mean"], color=pal[label], lw=1.0, ls=(0, dash) if dash else "-",
                zorder=2)
        ok = g["ci_lo"].notna()
        ax.vlines(g.loc[ok, "kib"], g.loc[ok, "ci_lo"].clip(lower=0),
                  g.loc[ok, "ci_hi"].clip(upper=100), colors=pal[label], lw=0.7, zorder=2)
        size = [_SIZES[0] + (_SIZES[1] - _SIZES[0]) * ranks[w] / top for w in g["width"]]
        ax.scatter(g["kib"], g["mean"], s=size, color=pal[label],
                   marker=style.GRID_MARKERS.get(grid, "o"), edgecolors="0.15", linewidths=0.4,
                   zorder=3)
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for _, w in win.iterrows():
        ax.axvline(w["budget_kib"], color="0.8", lw=0.5, ls=":", zorder=0)
        filled = bool(w["distinguishable"]) if w["distinguishable"] is not None else False
        ax.scatter([w["budget_kib"]], [_WINNER_Y], transform=trans, marker="v", s=22,
                   color=pal.get(w["best"], "0.5") if filled else "white",
                   edgecolors=pal.get(w["best"], "0.5"), linewidths=0.9, clip_on=False, zorder=4)
    log_x(ax, pts["kib"], plain=True)
    means = pts["mean"]
    lo, hi = float(means.min()), float(means.max())
    pad = max(1.0, 0.08 * (hi - lo))
    # the strip for the winner marks: the top eighth of the panel, above every mean
    top = hi + pad
    bottom = max(0.0, lo - pad)
    ax.set_ylim(bottom, top + (top - bottom) / 7)
    ax.set_yticks([t for t in ax.get_yticks() if bottom <= t <= min(top, 100.0)])  # no "110%"


def _legend(fig, labels: list[str]) -> None:
    """One legend at the foot: the resolutions' lines, then what marker size and the triangles
    mean."""
    extra = [Line2D([], [], ls="", marker="o", ms=np.sqrt(s), color="0.6", mec="0.15", mew=0.4,
                    label=name) for s, name in ((_SIZES[0], "narrowest"), (_SIZES[1], "widest"))]
    extra += [Line2D([], [], ls="", marker="v", ms=5, color="0.3", label="best (distinct)"),
              Line2D([], [], ls="", marker="v", ms=5, mfc="white", color="0.3",
                     label="best (within noise)")]
    resolution_legend(fig, labels, kind="line", extra=extra)


def _caption(data: ReportData, fixed: list[str], which: str) -> str:
    return (
        f"{acc_name(data).capitalize()} against the stored size of the packed model (KiB, log "
        "scale: quantised weights at their bits, everything else at fp32), one line per "
        "resolution through the widths it was trained at (marker area grows with width; bars: "
        f"95% t interval over seeds); {which}. Dotted vertical lines: the budgets of the "
        "memory_winners table; the triangle above each is coloured by the resolution most "
        "accurate there, each resolution read off its own line (linear in log bytes, never past "
        "its narrowest or widest model), filled when its lead over the runner-up is "
        "distinguishable (Welch 95% interval above 0), hollow when it is within the noise."
        + fixed_text(fixed))


def memory_frontier(data: ReportData, width: float = style.DOUBLE_COLUMN_IN) -> FigureOutput:
    """At 7 in a row per family and a column per quantiser and keep_fp32; at 3.5 in one column
    of families, for the quantiser and keep_fp32 with the most runs."""
    pts, win, fixed = _shown(analyse(data))
    narrow = single(width)
    cols = sorted({(q, k) for q, k in zip(pts["scale_rule"], pts["keep_fp32"], strict=True)})
    if narrow and len(cols) > 1:
        counts = pts.groupby(["scale_rule", "keep_fp32"])["n"].sum()
        cols = [counts.index[int(np.argmax(counts.to_numpy()))]]
        which = (f"one panel per model family, scale_rule = {cols[0][0]}, keep_fp32 = "
                 f"{cols[0][1]} (every quantiser and keep_fp32: the 7 in version)")
    elif len(cols) > 1:
        which = ("one row of panels per model family, one column per quantiser (scale_rule) and "
                 "keep_fp32")
    else:
        which = "one panel per model family"
    fams = sorted(pts["family"].unique())
    labels = order_precisions(pts["precision"])
    pal = style.palette(labels)
    fig, axes = style.new_figure(len(fams), len(cols), width=width,
                                 height=(1.6 if narrow else 1.9) * len(fams) + 1.5)
    for i, fam in enumerate(fams):
        for j, (q, k) in enumerate(cols):
            ax = axes[i, j]
            sel = (pts["family"] == fam) & (pts["scale_rule"] == q) & (pts["keep_fp32"] == k)
            wsel = (win["family"] == fam) & (win["scale_rule"] == q) & (win["keep_fp32"] == k)
            if not sel.any():
                ax.set_visible(False)
                continue
            _panel(ax, pts[sel], win[wsel], pal)
            if narrow or len(cols) > 3:  # a panel under 2 in wide has room for decades only
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0,)))
            # two lines: one line of "family: quantiser, keep_fp32" runs into the next panel's
            style.panel_title(ax, f"{fam}\n{q}, keep_fp32 = {k}" if len(cols) > 1 else str(fam))
            ax.set_xlabel("stored model (KiB)" if i == len(fams) - 1 else "")
            ax.set_ylabel(f"{acc_name(data)} (%)" if j == 0 else "")
    _legend(fig, labels)
    return FigureOutput("memory_frontier", "Accuracy at equal stored bytes",
                        _caption(data, fixed, which), fig)


