"""Where training breaks: accuracy and the share of diverged seeds against the learning rate
(a multiple of the sweep's smallest), per model, zero-free and zero-included grids side by side
with fp32 and bnn as references in both. Drawn only for a study with an lr grid axis."""

from __future__ import annotations

import dataclasses

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from suite.report import style
from suite.report.figures.common import (
    FigureOutput,
    Unavailable,
    acc_name,
    empty_panel,
    fit_legend,
    fixed_text,
    single,
)
from suite.report.frame import grid_kind, order_precisions
from suite.report.lrstress import MIN_LRS, has_lr_variation, lr_levels, multiple_label
from suite.report.stats import ReportData, headline_slice

# The lr-stress figure: the two level-grid kinds side by side, fp32 and bnn in both as references.
_LR_COLUMNS = ("no zero", "zero")
_LR_REFERENCES = ("fp32", "bnn")
_HEADERS = {"no zero": "zero excluded (2^k levels)", "zero": "zero included (2^k+1)"}


def _lr_style(grid: str) -> dict[str, object]:
    """Line and marker of one resolution: references dotted, level grids as everywhere else."""
    if grid in _LR_REFERENCES:
        return {"ls": ":", "marker": style.GRID_MARKERS[grid], "lw": 0.9, "ms": 4.0}
    dash = style.GRID_DASHES.get(grid, "")
    return {"ls": (0, dash) if dash else "-", "marker": style.GRID_MARKERS.get(grid, "o"),
            "lw": 1.1, "ms": 3.5}


def _lr_lines(ax: Axes, levels: pd.DataFrame, y: str, pal: dict[str, str]) -> None:
    # NaN (every seed diverged) breaks a line: a gap, not a fall to zero.
    for label, g in levels.groupby("precision", sort=False):
        g = g.sort_values("multiple")
        grid = str(g["grid"].iloc[0])
        ax.plot(g["multiple"].to_numpy(float), g[y].to_numpy(float), color=pal[label],
                mec="0.15", mew=0.4,
                zorder=2 if grid in _LR_REFERENCES else 3, **_lr_style(grid))


def _lr_axis(ax: Axes, multiples: pd.Series, *, last: bool, narrow: bool) -> None:
    ms = sorted(float(m) for m in multiples.unique())
    ax.set_xscale("log")
    # At 3.5 in every other multiple is labelled (all are ticked): "3×10×30×" ran together.
    ax.set_xticks(ms, [f"{multiple_label(m)}×" if not narrow or i % 2 == 0 else ""
                       for i, m in enumerate(ms)])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(ms[0] / 1.4, ms[-1] * 1.4)
    ax.tick_params(axis="x", labelbottom=last)
    if last:
        ax.set_xlabel("lr (× the smallest)" if narrow
                      else "learning rate (multiple of the sweep's smallest)")


def _lr_pair(top: Axes, bottom: Axes, fam_levels: pd.DataFrame, grid: str,
             pal: dict[str, str]) -> None:
    """One model and grid kind: accuracy over lr (top), share of diverged seeds (bottom)."""
    shown = fam_levels[fam_levels["grid"].isin([grid, *_LR_REFERENCES])]
    _lr_lines(top, shown, "acc", pal)
    _lr_lines(bottom, shown, "div_pct", pal)
    acc = shown["acc"].dropna()
    if len(acc):
        top.set_ylim(max(0.0, float(acc.min()) - 3), min(100.0, float(acc.max()) + 3))
    bottom.set_ylim(-8, 108)
    bottom.set_yticks([0, 50, 100])
    if not (fam_levels["grid"] == grid).any():
        empty_panel(top, f"no {style.GRID_NAMES[grid]} runs")


def lr_stability(data: ReportData, width: float = style.DOUBLE_COLUMN_IN) -> FigureOutput:
    if not has_lr_variation(data):
        raise Unavailable(f"fewer than {MIN_LRS} learning rates per setting: the study sweeps no lr")
    df, fixed = headline_slice(data.runs, data.axes, keep=["lr"])
    lv = lr_levels(dataclasses.replace(data, runs=df))
    lv = lv.assign(div_pct=lv["div_share"] * 100)
    families = sorted(lv["family"].unique())
    labels = order_precisions(lv["precision"])
    pal = style.palette(labels)
    narrow = single(width)
    fig, axes = style.new_figure(2 * len(families), len(_LR_COLUMNS),
                                 width=width, height=(1.6 if narrow else 1.75) * len(families)
                                 + 1.0,
                                 height_ratios=[2.6, 1.0] * len(families))
    for i, fam in enumerate(families):
        f = lv[lv["family"] == fam]
        for j, grid in enumerate(_LR_COLUMNS):
            top, bottom = axes[2 * i, j], axes[2 * i + 1, j]
            _lr_pair(top, bottom, f, grid, pal)
            _lr_axis(top, lv["multiple"], last=False, narrow=narrow)
            _lr_axis(bottom, lv["multiple"], last=i == len(families) - 1, narrow=narrow)
            # Column headers once, on the first pair; the model names the row pair.
            if i == 0:
                style.panel_title(top, _HEADERS[grid])
            size = 7 if narrow else None
            top.set_ylabel(f"{fam}\n{'acc.' if narrow else 'accuracy'} (%)" if j == 0 else "",
                           fontsize=size)
            bottom.set_ylabel("diverged (%)" if j == 0 else "", fontsize=size)
    handles = [Line2D([], [], color=pal[p], mec="0.15", mew=0.4, label=p,
                      **_lr_style(grid_kind(p) or "")) for p in labels]
    fit_legend(fig, handles, loc="outside lower center", handletextpad=0.4, columnspacing=1.0,
               title="weight resolution (bits; fp32 and bnn dotted, in both columns)")
    notes = []
    if not lv["grid"].isin(_LR_COLUMNS).any():
        notes.append("lr stability: no level-grid runs in the lr sweep, references only")
    if not (lv["precision"] == "fp32").any():
        notes.append("lr stability: no fp32 runs in the lr sweep, so no fp32 reference")
    caption = (
        f"Where training breaks. {acc_name(data).capitalize()} (%; top of each pair: mean over "
        "the seeds that did not diverge; a gap: every seed diverged) and share of seeds that "
        "diverged (bottom) against the learning rate as a multiple of the sweep's smallest "
        "(log scale), one pair of rows per model; left: zero-free grids (2^k levels, circles, "
        "solid), right: zero-included grids (2^k+1 levels, squares, dashed); fp32 (diamonds) "
        "and bnn (stars), dotted, in both as references. The max stable lr of every setting is "
        "in the max_stable_lr table." + fixed_text(fixed)
    )
    return FigureOutput("lr_stability", "Learning-rate stability", caption, fig, notes)
