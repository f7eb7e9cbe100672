"""Pieces every figure shares: the figure result, the missing-data exception, panel grids sized
for a journal column, the colour and style legends, accuracy limits that one outlier cannot
stretch, log and bit axes, and the annotated heat map.

Each figure draws at a given width (style.FIGURE_WIDTHS: 3.5 in single column, 7 in double) and
lays its panels out for it; text never goes below style.MIN_FONT_PT at print size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter

from suite.report import style
from suite.report.frame import grid_kind
from suite.report.stats import ReportData

BNN_OFFSET = -0.12  # bnn sits at 1 bit like the binary grid; nudged left so neither hides
# Curves: the reference and the zero-free grids solid, zero-included dashed, bnn dotted.
LINE_DASHES: dict[str, tuple[float, float] | str] = {
    "no zero": "", "zero": (4, 1.5), "bnn": (1.2, 1.2), "fp32": "",
}


class Unavailable(Exception):
    """The study does not hold what a figure or table needs; the message says what is missing."""


@dataclass
class FigureOutput:
    name: str
    title: str
    caption: str
    fig: Figure
    notes: list[str] = field(default_factory=list)


def single(width: float) -> bool:
    """Whether ``width`` is the single-column width (the figure lays out fewer, taller panels)."""
    return width <= style.SINGLE_COLUMN_IN + 1e-9


def panel_grid(n: int, width: float, *, row_height: float = 2.1, extra: float = 0.7,
               sharex: bool | str = False, sharey: bool | str = False):
    """``n`` panels in as many columns as keep each about 1.6 in wide or more (3 at 7 in, 2 at
    3.5 in; 2x2 for four), unused cells hidden."""
    max_cols = 2 if single(width) else 3
    ncols = 2 if n == 4 else max(1, min(n, max_cols))
    nrows = math.ceil(n / ncols)
    fig, axes = style.new_figure(nrows, ncols, width=width, height=row_height * nrows + extra,
                                 sharex=sharex, sharey=sharey)
    style.hide_unused(axes, n)
    return fig, axes


def bottom_of_column(axes: np.ndarray, ax: Axes, n: int) -> bool:
    """Whether ``ax`` is the lowest of the ``n`` used panels in its column (it carries the x
    label; the panels above share it)."""
    i = list(axes.flat).index(ax)
    return i + axes.shape[1] >= n


def x_bits(df: pd.DataFrame) -> pd.Series:
    return df["bits"] + np.where(df["precision"] == "bnn", BNN_OFFSET, 0.0)


def fixed_text(fixed: list[str]) -> str:
    return f" Held fixed: {'; '.join(fixed)}." if fixed else ""


def acc_name(data: ReportData) -> str:
    return {"test_acc": "test accuracy", "val_acc": "final validation accuracy",
            "best_val_acc": "best validation accuracy"}.get(data.acc_col or "", "accuracy")


def resolution_handles(labels: Sequence[str], *, kind: str = "marker") -> list:
    """Legend entries for the resolutions; ``kind`` matches how the figure uses colour: markers
    (shape = grid kind), lines (dash and marker = grid kind), or patches (when shape means
    something else, e.g. the model)."""
    handles = []
    for label in labels:
        color = style.color_for(label)
        grid = grid_kind(label) or ""
        if kind == "marker":
            handles.append(Line2D([], [], ls="", marker=style.GRID_MARKERS.get(grid, "o"),
                                  color=color, mec="0.15", mew=0.4, label=label))
        elif kind == "line":
            dash = LINE_DASHES.get(grid, "")
            handles.append(Line2D([], [], color=color, lw=1.3, label=label,
                                  ls=(0, dash) if dash else "-",
                                  marker=style.GRID_MARKERS.get(grid, "o"), ms=3.5,
                                  mec="0.15", mew=0.3))
        else:
            handles.append(Patch(facecolor=color, edgecolor="0.15", lw=0.4, label=label))
    return handles


RESOLUTION_TITLE = "weight resolution (bits; bnn = binary normalized)"


def resolution_legend(fig: Figure, labels: Sequence[str], *, kind: str = "marker",
                      extra: Sequence = ()) -> None:
    """The colour key, at the foot of the figure; ``extra``: further entries in the same
    legend (one legend per figure, not two that repeat each other)."""
    fit_legend(fig, [*resolution_handles(labels, kind=kind), *extra], loc="outside lower center",
               title=RESOLUTION_TITLE, columnspacing=1.0, handletextpad=0.3)


def fit_legend(fig: Figure, handles: list, *, loc: str, **kwargs) -> None:
    """A figure legend in as few rows as fit the figure's width: tried with every handle on one
    row, then with fewer columns until its drawn width fits (a legend wider than the figure is
    cut off in the saved file)."""
    renderer = fig.canvas.get_renderer()
    limit = fig.bbox.width * 0.98
    # Balanced rows: 6 handles go 6, 3 (two rows), 2 (three rows), ... per row.
    tries = list(dict.fromkeys(math.ceil(len(handles) / rows)
                               for rows in range(1, len(handles) + 1)))
    for ncols in tries:
        legend = fig.legend(handles=handles, loc=loc, ncols=ncols, **kwargs)
        if ncols == 1 or legend.get_window_extent(renderer).width <= limit:
            return
        legend.remove()


def grid_line_handles(grids: Sequence[str]) -> list:
    """Legend entries for the grey lines joining the zero-free and the zero-included grids."""
    handles = []
    for g in ("no zero", "zero"):
        if g in grids:
            dash = style.GRID_DASHES[g]
            handles.append(Line2D([], [], color=style.NEUTRAL, ls=(0, dash) if dash else "-",
                                  marker=style.GRID_MARKERS[g], mfc="white", mec="0.15",
                                  label=style.GRID_NAMES[g]))
    return handles


def grid_lines(ax: Axes, a: pd.DataFrame, x: str, y: str = "mean") -> None:
    """Neutral lines joining the level grids of one family (zero in / zero out)."""
    q = a[a["grid"].isin(["zero", "no zero"])]
    if q.empty:
        return
    order = [g for g in ("no zero", "zero") if g in set(q["grid"])]
    sns.lineplot(data=q, x=x, y=y, style="grid", style_order=order,
                 dashes={g: style.GRID_DASHES[g] for g in order}, color=style.NEUTRAL,
                 estimator=None, errorbar=None, sort=True, ax=ax, legend=False, lw=1.0, zorder=1)


def fp32_reference(ax: Axes, ref: pd.DataFrame, *, dash=":", band: bool = True) -> bool:
    """The fp32 mean as a line (and its interval as a band, cut to [0, 100])."""
    if ref.empty or pd.isna(ref["mean"].iloc[0]):
        return False
    row = ref.iloc[0]
    ax.axhline(row["mean"], color="black", ls=dash, lw=1.0, zorder=1)
    if band and pd.notna(row["ci_lo"]):
        ax.axhspan(max(row["ci_lo"], 0.0), min(row["ci_hi"], 100.0), color="0.5", alpha=0.15,
                   lw=0, zorder=0)
    return True


def core_range(values: pd.Series, *, min_gap: float = 10.0) -> tuple[float, float]:
    """The range of ``values`` without a lone outlier at either end: the lowest (highest) value
    is left out when its distance to the next one exceeds both ``min_gap`` and the span of all
    the others (a collapsed bnn at 26% among means of 63-72%), so it cannot squash every other
    mean into a line. At most one value per end goes: a trend is not an outlier."""
    v = np.sort(pd.to_numeric(values, errors="coerce").dropna().to_numpy(float))
    if len(v) == 0:
        return (math.nan, math.nan)
    lo, hi = 0, len(v) - 1
    if hi - lo >= 2 and v[1] - v[0] > max(min_gap, v[hi] - v[1]):
        lo = 1
    if hi - lo >= 2 and v[hi] - v[hi - 1] > max(min_gap, v[hi - 1] - v[lo]):
        hi -= 1
    return float(v[lo]), float(v[hi])


def edge_marks(ax: Axes, x: pd.Series, y: pd.Series, colors: list, lo: float, hi: float) -> int:
    """Points outside [lo, hi] drawn at the edge they fell past as an arrowhead with their value
    beside it; returns how many there were."""
    n = 0
    for xi, yi, c in zip(x, y, colors, strict=True):
        if pd.isna(yi) or lo <= yi <= hi:
            continue
        n += 1
        edge, marker, va = (lo, "v", "bottom") if yi < lo else (hi, "^", "top")
        ax.scatter([xi], [edge], marker=marker, s=22, color=c, edgecolors="0.15",
                   linewidths=0.4, clip_on=False, zorder=5)
        ax.annotate(f"{yi:.0f}", (xi, edge), xytext=(3, 2 if va == "bottom" else -2),
                    textcoords="offset points", fontsize=style.MIN_FONT_PT, color="0.2",
                    va=va, ha="left", annotation_clip=False)
    return n


def log_x(ax: Axes, values: pd.Series, *, plain: bool = False) -> None:
    """Log x axis that keeps readable labels (1-2-5 steps) even when the data span < 1 decade.
    ``plain``: numbers as they are (for a unit like KiB, where "2k KiB" would read oddly)."""
    lo, hi = float(values.min()), float(values.max())
    ax.set_xscale("log")
    ax.set_xlim(lo / 1.6, hi * 1.6)
    # 1-2-5 labels crowd each other past ~3 decades ("5000" ran into "10000"): decades only.
    wide = math.log10(hi * 1.6) - math.log10(lo / 1.6) > 3.2
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}") if plain
                                 else EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())


def bits_axis(ax: Axes, *, label: bool = True) -> None:
    ax.set_xticks([1, 2, 3, 4])
    ax.set_xlim(0.6, 4.4)
    if label:
        ax.set_xlabel("weight resolution (bits)")


def nonnegative_limits(ax: Axes, values: pd.Series, min_top: float) -> None:
    """Counts, rates and spreads cannot be negative: start the axis at 0 (a hair below, so
    markers at 0 are whole) and give all-zero panels a readable scale instead of ±0.05."""
    finite = pd.to_numeric(values, errors="coerce").dropna()
    top = max(min_top, float(finite.max()) * 1.12) if len(finite) else min_top
    ax.set_ylim(-0.04 * top, top)


def empty_panel(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def signed(v: float) -> str:
    text = f"{v:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def heatmap(ax: Axes, values: pd.DataFrame, annot: np.ndarray, *, cmap, vmin: float,
            vmax: float, fontsize: float = style.MIN_FONT_PT, faded: np.ndarray | None = None):
    """An annotated heat map: seaborn.heatmap's look (white cell borders, row 0 on top, text
    dark or light by cell luminance) without its full-figure draw per call, which it makes to
    check tick labels for overlap (0.6 s per panel on a 2x2 figure, paid again in each panel).
    NaN cells stay empty. ``faded``: cells drawn pale (mixed 70% with white) and their text
    grey, for values too uncertain to read a colour into. Returns the mesh (for a colour bar)."""
    data = np.ma.masked_invalid(values.to_numpy(dtype=float))
    cmap = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    mesh = ax.pcolormesh(data, cmap=cmap, vmin=vmin, vmax=vmax, edgecolors="white", lw=0.6)
    colors = mesh.to_rgba(data)
    if faded is not None:
        fade = np.asarray(faded, dtype=bool)[..., None]
        colors = np.where(fade, 0.3 * colors + 0.7 * np.ones_like(colors), colors)
        mesh.set_facecolor(colors.reshape(-1, 4))
        mesh.set_array(None)  # the face colours are set; the colour bar keeps the cmap and norm
    nrows, ncols = data.shape
    ax.set_xlim(0, ncols)
    ax.set_ylim(nrows, 0)
    ax.set_xticks(np.arange(ncols) + 0.5, [str(c) for c in values.columns])
    ax.set_yticks(np.arange(nrows) + 0.5, [str(r) for r in values.index], va="center")
    for side in ("left", "bottom", "top", "right"):
        ax.spines[side].set_visible(False)
    for i in range(nrows):
        for j in range(ncols):
            text = annot[i, j]
            if data.mask[i, j] or not text:
                continue
            lum = sns.utils.relative_luminance(colors[i, j])
            pale = faded is not None and bool(faded[i, j])
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=fontsize,
                    color="0.4" if pale else "0.15" if lum > 0.408 else "white")
    return mesh
