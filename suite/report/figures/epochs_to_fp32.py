"""Epochs each resolution needs to come within MATCH_TOLERANCE of fp32, as heat maps with no
untrained cells: every model at its main width (the one with the most resolutions trained), and
beside it, for models trained at several widths, the resolutions trained at every one of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from matplotlib.ticker import EngFormatter

from suite.report import style
from suite.report.figures.common import FigureOutput, Unavailable, fixed_text, heatmap, single
from suite.report.frame import order_precisions
from suite.report.stats import MATCH_TOLERANCE, ReportData, epochs_to_match, headline_slice

_PARAMS = EngFormatter(sep="", places=0)


def _cells(data: ReportData) -> tuple[pd.DataFrame, list[str]]:
    """Per model, resolution and width: median epochs to reach fp32 (inf: the median run did
    not), the budget, and the fp32 parameter count of the width."""
    if data.curves.empty:
        raise Unavailable("no per-epoch curves were recorded")
    if not (data.runs["precision"] == "fp32").any():
        raise Unavailable("no fp32 runs, so there is no 32-bit accuracy to reach")
    df, fixed = headline_slice(data.runs, data.axes, keep=["width"])
    em = epochs_to_match(data.frames, data.axes, MATCH_TOLERANCE)
    em = em[em["run_id"].isin(df["run_id"])]
    if em.empty:
        raise Unavailable("no run has both curves and fp32 runs in its setting")
    if "width" not in em:
        em = em.assign(width=np.nan)
    em = em.merge(df[["run_id", "family"]], on="run_id")
    em = em.assign(reached=em["epoch_reached"].astype(float).fillna(np.inf),
                   size=em["width"].astype(float).fillna(-1.0))
    agg = (em.groupby(["family", "precision", "size"], dropna=False)
           .agg(median=("reached", "median"), budget=("budget", "max"),
                params=("params", "median"))
           .reset_index())
    # One label per model size: the fp32 parameter count (quantised variants differ slightly).
    ref = (agg.sort_values("precision", key=lambda p: p != "fp32")
           .groupby(["family", "size"])["params"].first().rename("size_params"))
    return agg.merge(ref, on=["family", "size"]), fixed


def _params_label(v: float) -> str:
    return _PARAMS(v) if pd.notna(v) else "?"


def _main_size(a: pd.DataFrame) -> float:
    """The width with the most resolutions trained (the smallest such, on a tie)."""
    counts = a.groupby("size")["precision"].nunique()
    return float(counts[counts == counts.max()].index.min())


def _draw(ax: Axes, cells: pd.DataFrame, rows: list[str], col_key: str, cols: list,
          col_labels: list[str], cmap, vmax: float, fontsize: float):
    med = cells.pivot_table(index="precision", columns=col_key, values="median",
                            dropna=False).reindex(index=rows, columns=cols)
    shown = med.where(np.isfinite(med))
    annot = shown.apply(lambda col: col.map(lambda v: "" if pd.isna(v) else f"{v:g}"))
    mesh = heatmap(ax, shown, annot.to_numpy(), cmap=cmap, vmin=1, vmax=vmax,
                   fontsize=fontsize)
    at = cells.set_index(["precision", col_key])
    for i, prec in enumerate(rows):
        for j, col in enumerate(cols):
            if (prec, col) not in at.index:
                continue
            c = at.loc[(prec, col)]
            if not np.isfinite(c["median"]):
                # Hatched: trained, never got there.
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor="0.94", edgecolor="0.75",
                                       hatch="////", lw=0, zorder=0.5))
                ax.text(j + 0.5, i + 0.5, f"> {c['budget']:g}", ha="center", va="center",
                        fontsize=fontsize, color="0.25")
    ax.set_xticks(np.arange(len(cols)) + 0.5, col_labels, rotation=0)
    ax.tick_params(length=0)
    ax.grid(False)
    return mesh


def epochs_to_fp32(data: ReportData, width: float = style.DOUBLE_COLUMN_IN) -> FigureOutput:
    """Heat maps, cell = median epochs to reach fp32: (a) resolution x model at each model's
    main width, (b) per model with several widths, resolution x width for the resolutions
    trained at all of them. Every cell was trained: no grid of blanks where a width sweep
    covered a few resolutions only."""
    agg, fixed = _cells(data)
    families = sorted(agg["family"].dropna().unique())
    main = {f: _main_size(agg[agg["family"] == f]) for f in families}
    at_main = agg[[main[f] == s for f, s in zip(agg["family"], agg["size"], strict=True)]]
    rows = order_precisions(at_main["precision"])
    swept = []
    for f in families:
        a = agg[agg["family"] == f]
        sizes = sorted(a["size"].unique())
        full = [p for p, g in a.groupby("precision") if g["size"].nunique() == len(sizes)]
        if len(sizes) > 1 and full:
            swept.append((f, sizes, order_precisions(pd.Series(full))))
    vmax = float(agg["budget"].max())
    cmap = sns.color_palette("crest", as_cmap=True)
    narrow = single(width)
    fs = style.MIN_FONT_PT if narrow else 7
    n_sweep_rows = max((len(r) for _, _, r in swept), default=0)
    top_h = 0.17 * len(rows) + 0.9
    bottom_h = 0.17 * n_sweep_rows + 0.75 if swept else 0.0
    fig = style.blank_figure(width, top_h + bottom_h + 0.3)
    grid = fig.add_gridspec(2 if swept else 1, 1,
                            height_ratios=[top_h, bottom_h] if swept else None)
    ax = fig.add_subplot(grid[0])
    cells = at_main.assign(col=at_main["family"])
    labels = [f"{f}\n{_params_label(cells.loc[cells['family'] == f, 'size_params'].iloc[0])}"
              for f in families]
    mesh = _draw(ax, cells, rows, "col", families, labels, cmap, vmax, fs)
    ax.set_ylabel("weight resolution (bits)")
    ax.set_xlabel("model (fp32 parameters at its main width)")
    ax.tick_params(axis="x", labelsize=fs)
    style.panel_title(ax, ("(a) " if swept else "") + "every resolution, each model at its main width")
    if swept:
        inner = grid[1].subgridspec(1, len(swept), width_ratios=[len(s) for _, s, _ in swept])
        for k, (fam, sizes, prec) in enumerate(swept):
            b_ax = fig.add_subplot(inner[0, k])
            a = agg[(agg["family"] == fam) & agg["precision"].isin(prec)]
            size_labels = [_params_label(a.loc[a["size"] == s, "size_params"].iloc[0])
                           for s in sizes]
            _draw(b_ax, a, prec, "size", sizes, size_labels, cmap, vmax, fs)
            b_ax.set_ylabel("weight resolution (bits)" if k == 0 else "")
            b_ax.set_xlabel("parameters" if narrow else "fp32 parameters per width")
            style.panel_title(b_ax, ("(b) " if k == 0 else "") + str(fam))
    # On panel (a) alone: constrained layout cannot place one bar beside nested grids.
    fig.colorbar(mesh, ax=ax, shrink=0.9, aspect=15, pad=0.02,
                 label="epochs (median over seeds)")
    caption = _caption([f for f, _, _ in swept]) + fixed_text(fixed)
    notes = []
    if not swept:
        notes.append("epochs to fp32: every model has one size, so no trend within a model")
    return FigureOutput("epochs_to_fp32", "Epochs to reach fp32 accuracy", caption, fig, notes)


def _caption(swept: list[str]) -> str:
    """``swept``: the models drawn across their widths (panel b)."""
    return (
        f"Epochs a run needs before its validation accuracy comes within {MATCH_TOLERANCE:g} "
        "point of the mean final validation accuracy of the fp32 runs of its setting (median over "
        "seeds). " + ("(a) " if swept else "") + "Every resolution (rows) of every model "
        "(columns), each model at its main "
        "width (the one with the most resolutions trained), labelled with its fp32 parameter "
        "count"
        + (f"; (b) for each model trained at several widths, the resolutions trained at all of "
           f"them (rows) per width (columns, labelled with the fp32 parameter count): "
           f"{', '.join(swept)}" if swept else "")
        + ". Hatched cells, \"> B\": the median run did not get there within its budget of B "
        "epochs (with two seeds, one run short of the fp32 mean is enough)."
    )
