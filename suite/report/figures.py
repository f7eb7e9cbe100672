"""The report's figures. Each function takes the prepared ReportData and returns a FigureOutput,
or raises Unavailable with the reason when the study lacks what the figure needs.

Means and intervals are computed with pandas (stats.py) and the aggregates are plotted, which keeps
a 10,000-run study fast and makes figures and tables agree on every number. Seaborn draws the
marks; matplotlib only adds what seaborn cannot (given intervals, reference lines, legends).
"""

from __future__ import annotations

import dataclasses
import math
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import (
    EngFormatter,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

from suite.report import style
from suite.report.frame import grid_kind, order_precisions
from suite.report.lrstress import MIN_LRS, has_lr_variation, lr_levels, multiple_label
from suite.report.stats import (
    MATCH_TOLERANCE,
    ReportData,
    epochs_to_match,
    headline_slice,
    matched_gaps,
    points,
    run_instability,
    run_oscillation,
    summarize,
)

BNN_OFFSET = -0.12  # bnn sits at 1 bit like the binary grid; nudged left so neither hides
# Curves: the reference and the zero-free grids solid, zero-included dashed, bnn dotted.
_LINE_DASHES: dict[str, tuple[float, float] | str] = {
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


# --- shared pieces ---------------------------------------------------------------------------


def _grid(n: int, max_cols: int = 3, row_height: float = 2.1, extra: float = 0.7):
    ncols = 2 if n == 4 else min(n, max_cols)
    nrows = math.ceil(n / ncols)
    fig, axes = style.new_figure(
        nrows, ncols, width=style.figure_width(n), height=row_height * nrows + extra
    )
    style.hide_unused(axes, n)
    return fig, axes


def _x_bits(df: pd.DataFrame) -> pd.Series:
    return df["bits"] + np.where(df["precision"] == "bnn", BNN_OFFSET, 0.0)


def _fixed_text(fixed: list[str]) -> str:
    return f" Held fixed: {'; '.join(fixed)}." if fixed else ""


def _resolution_legend(fig: Figure, labels: Sequence[str], *, kind: str = "marker") -> None:
    """Colour key shared by all figures; ``kind`` matches how the figure uses colour: markers
    (shape = grid kind), lines, or patches (when shape means something else, e.g. the model)."""
    handles = []
    for label in labels:
        color = style.color_for(label)
        if kind == "marker":
            marker = style.GRID_MARKERS.get(grid_kind(label) or "", "o")
            handles.append(Line2D([], [], ls="", marker=marker, color=color, mec="0.15", mew=0.4,
                                  label=label))
        elif kind == "line":
            dash = _LINE_DASHES.get(grid_kind(label) or "", "")
            handles.append(Line2D([], [], color=color, lw=1.5, label=label,
                                  ls=(0, dash) if dash else "-"))
        else:
            handles.append(Patch(facecolor=color, edgecolor="0.15", lw=0.4, label=label))
    fit_legend(fig, handles, loc="outside lower center",
               title="weight resolution (bits; bnn = binary normalized)", columnspacing=1.0,
               handletextpad=0.3)


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


def _style_legend(fig: Figure, grids: Sequence[str], *, fp32_line: bool, extra=()) -> None:
    handles = []
    for g in ("no zero", "zero", "bnn"):
        if g in grids:
            dash = style.GRID_DASHES[g]
            ls = (0, dash) if dash else "-"
            handles.append(Line2D([], [], color=style.NEUTRAL, ls=ls if g != "bnn" else "",
                                  marker=style.GRID_MARKERS[g], mfc="white", mec="0.15",
                                  label=style.GRID_NAMES[g]))
    if fp32_line:
        handles.append(Line2D([], [], color="black", ls=":", lw=1, label="fp32 mean (95% CI band)"))
    handles.extend(extra)
    if handles:
        fit_legend(fig, handles, loc="outside upper center", handletextpad=0.4,
                   columnspacing=1.2)


def _points_with_ci(ax: Axes, a: pd.DataFrame, x: str, palette: dict[str, str]) -> None:
    """Coloured mean markers and their 95% intervals (intervals given, so matplotlib draws them).
    Intervals are cut at the axis limits (see _accuracy_limits), which marks the cut."""
    ok = a["ci_lo"].notna()
    ax.vlines(a.loc[ok, x], a.loc[ok, "ci_lo"], a.loc[ok, "ci_hi"],
              colors=[palette[p] for p in a.loc[ok, "precision"]], lw=1.0, zorder=2)
    sns.scatterplot(data=a, x=x, y="mean", hue="precision", palette=palette, style="grid",
                    markers=style.GRID_MARKERS, ax=ax, legend=False, s=28, edgecolor="0.15",
                    linewidth=0.4, zorder=3)


def _grid_lines(ax: Axes, a: pd.DataFrame, x: str, y: str = "mean") -> None:
    """Neutral lines joining the level grids of one family (zero in / zero out)."""
    q = a[a["grid"].isin(["zero", "no zero"])]
    if q.empty:
        return
    order = [g for g in ("no zero", "zero") if g in set(q["grid"])]
    sns.lineplot(data=q, x=x, y=y, style="grid", style_order=order,
                 dashes={g: style.GRID_DASHES[g] for g in order}, color=style.NEUTRAL,
                 estimator=None, errorbar=None, sort=True, ax=ax, legend=False, lw=1.0, zorder=1)


def _fp32_reference(ax: Axes, ref: pd.DataFrame, *, dash=":", label_band: bool = True) -> bool:
    if ref.empty or pd.isna(ref["mean"].iloc[0]):
        return False
    row = ref.iloc[0]
    ax.axhline(row["mean"], color="black", ls=dash, lw=1.0, zorder=1)
    if label_band and pd.notna(row["ci_lo"]):
        ax.axhspan(max(row["ci_lo"], 0.0), min(row["ci_hi"], 100.0), color="0.5", alpha=0.15,
                   lw=0, zorder=0)
    return True


def _accuracy_limits(ax: Axes, a: pd.DataFrame, x: str, palette: dict[str, str]) -> bool:
    """Y limits from the means (and the fp32 mean), not from the intervals: with 2-3 seeds a t
    interval can span 0-100% and would flatten every mean into a line. Intervals that run past
    a limit end in a small arrowhead there. Returns whether any interval was cut."""
    means = a["mean"].dropna()
    if means.empty:
        return False
    lo, hi = float(means.min()), float(means.max())
    pad = max(2.0, 0.2 * (hi - lo))
    # Room for the intervals when they are modest; a huge one must not set the scale.
    ci_lo = a["ci_lo"].dropna()
    ci_hi = a["ci_hi"].dropna()
    if len(ci_lo):
        lo = min(lo - pad, max(float(ci_lo.min()), lo - 2 * pad))
        hi = max(hi + pad, min(float(ci_hi.max()), hi + 2 * pad))
    else:
        lo, hi = lo - pad, hi + pad
    lo, hi = max(lo, 0.0), min(hi, 100.0)
    ax.set_ylim(lo, hi)
    cut = False
    q = a[a["precision"] != "fp32"]
    for side, edge, marker in (("ci_hi", hi, "^"), ("ci_lo", lo, "v")):
        over = q[(q[side] > edge) if side == "ci_hi" else (q[side] < edge)]
        if len(over):
            cut = True
            ax.scatter(over[x], np.full(len(over), edge), marker=marker, s=14, clip_on=False,
                       c=[palette[p] for p in over["precision"]], linewidths=0, zorder=4)
    return cut


def _log_x(ax: Axes, values: pd.Series, *, plain: bool = False) -> None:
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


def _bits_axis(ax: Axes) -> None:
    ax.set_xticks([1, 2, 3, 4])
    ax.set_xlim(0.6, 4.4)
    ax.set_xlabel("weight resolution (bits)")


# --- figures ---------------------------------------------------------------------------------


def accuracy_vs_bits(data: ReportData) -> FigureOutput:
    runs = data.runs.dropna(subset=["acc"]) if len(data.runs) else data.runs
    if runs.empty:
        raise Unavailable("no completed run reports an accuracy")
    df, fixed = headline_slice(runs, data.axes)
    agg = summarize(df, ["family", "precision", "bits", "grid"], "acc")
    families = sorted(agg["family"].unique())
    labels = order_precisions(agg["precision"])
    pal = style.palette(labels)
    fig, axes = _grid(len(families))
    notes = []
    cut = False
    for ax, fam in zip(axes.flat, families, strict=False):
        a = agg[agg["family"] == fam].assign(xb=lambda d: _x_bits(d))
        _grid_lines(ax, a, "xb")
        if not _fp32_reference(ax, a[a["precision"] == "fp32"]):
            notes.append(f"accuracy vs bits, {fam}: no fp32 runs, so no 32-bit reference line")
        _points_with_ci(ax, a[a["precision"] != "fp32"], "xb", pal)
        cut = _accuracy_limits(ax, a, "xb", pal) or cut
        _bits_axis(ax)
        ax.set_ylabel(f"{_acc_name(data)} (%)")
        style.panel_title(ax, fam)
    _style_legend(fig, list(agg["grid"].unique()), fp32_line=(agg["precision"] == "fp32").any())
    _resolution_legend(fig, [p for p in labels if p != "fp32"])
    single = (agg["n"] <= 1).all()
    if single:
        notes.append("accuracy vs bits: one run per configuration, so no confidence intervals")
    caption = (
        f"{_acc_name(data).capitalize()} against weight resolution, one panel per model. Markers: "
        "mean over seeds, bars: 95% t-interval; circles/solid = zero-free grids (2^k levels), "
        "squares/dashed = zero-included grids (2^k+1 levels), star = binary normalized (bnn, "
        "drawn at 1 bit, nudged left). Dotted line and band: fp32 mean and its 95% interval."
        + (" An arrowhead at the panel edge: the interval runs on past it (few seeds)."
           if cut else "")
        + _fixed_text(fixed)
    )
    return FigureOutput("accuracy_vs_bits", "Accuracy vs bits", caption, fig, notes)


def gap_heatmap(data: ReportData) -> FigureOutput:
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
    # Side by side while the cells stay wide enough for "-12.3 / ±4.5"; stacked otherwise.
    stacked = len(cols) * len(augs) > 18
    width = style.figure_width(2 if len(cols) * len(augs) > 6 else 1)
    row_h = 0.32 * len(families) + 0.55
    fig, axes = style.new_figure(len(augs) if stacked else 1, 1 if stacked else len(augs),
                                 width=width,
                                 height=(row_h * len(augs) + 0.5) if stacked else row_h + 0.95,
                                 sharey=True, sharex=stacked)
    mesh = None
    for ax, aug in zip(axes.flat, augs, strict=True):
        g = gaps[gaps["augment"] == aug]
        gap = g.pivot_table(index="family", columns="precision", values="gap", dropna=False)
        lo = g.pivot_table(index="family", columns="precision", values="gap_lo", dropna=False)
        hi = g.pivot_table(index="family", columns="precision", values="gap_hi", dropna=False)
        gap, lo, hi = (t.reindex(index=families, columns=cols) for t in (gap, lo, hi))
        half = (hi - lo) / 2
        # Series.map per column: DataFrame.map needs pandas >= 2.1, the project allows 2.0.
        text = gap.apply(lambda col: col.map(_signed))
        spread = half.apply(lambda col: col.map(lambda v: f"{v:.1f}"))
        annot = np.where(gap.isna(), "", np.where(half.isna(), text, text + "\n±" + spread))
        mesh = _heatmap(ax, gap, annot, cmap="RdBu", vmin=-vmax, vmax=vmax, fontsize=5.5)
        last_row = not stacked or ax is axes.flat[-1]
        ax.set_xlabel("weight resolution (bits)" if last_row else "")
        ax.set_ylabel("model" if (ax is axes.flat[0] or stacked) else "")
        ax.tick_params(axis="x", rotation=0, labelsize=6, labelbottom=last_row)
        ax.tick_params(axis="y", rotation=0, left=ax is axes.flat[0] or stacked)
        ax.grid(False)
        style.panel_title(ax, f"augmentation: {aug}")
    extend = "min" if np.nanmin(gaps["gap"]) < -vmax else "neither"
    fig.colorbar(mesh, ax=list(axes.flat), label="gap to fp32 (points)", shrink=0.9, aspect=25,
                 pad=0.01, extend=extend)
    notes = []
    if gaps["gap_lo"].isna().all():
        notes.append("gap heat map: fewer than 2 runs per side everywhere, so no intervals")
    caption = (
        f"{_acc_name(data).capitalize()} gap to the fp32 runs of the same setting (points; "
        "negative = worse than fp32), mean difference over seeds and its Welch 95% interval (±). "
        "Blank: no matched runs." + _fixed_text(fixed)
    )
    return FigureOutput("gap_heatmap", "Accuracy gap to fp32", caption, fig, notes)


def _signed(v: float) -> str:
    text = f"{v:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def learning_curves(data: ReportData) -> FigureOutput:
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
    fig, axes = _grid(len(families))
    for ax, fam in zip(axes.flat, families, strict=False):
        cf = c[c["family"] == fam]
        grids = [g for g in _LINE_DASHES if g in set(cf["grid"])]
        # Mean and sd per epoch with pandas (seaborn's own estimator is ~10x slower on 100k
        # rows); seaborn draws the lines, the bands are matplotlib's fill_between.
        agg = (cf.groupby(["precision", "grid", "epoch"], sort=True)["y"]
               .agg(["mean", "std"]).reset_index())
        for label, g in agg.groupby("precision", sort=False):
            ax.fill_between(g["epoch"].astype(float), g["mean"] - g["std"], g["mean"] + g["std"],
                            color=pal[label], alpha=0.15, lw=0)
        sns.lineplot(data=agg, x="epoch", y="mean", hue="precision", hue_order=labels,
                     palette=pal, style="grid", style_order=grids,
                     dashes={g: _LINE_DASHES[g] for g in grids}, estimator=None, errorbar=None,
                     sort=True, ax=ax, legend=False, lw=1.0)
        # Mark where diverged runs stop: their curves end there, not at the budget.
        div = cf[cf["status"] == "diverged"].sort_values("epoch").groupby("run_id").tail(1)
        if len(div):
            ax.scatter(div["epoch"], div["y"], marker="x", s=18, linewidths=1.0, zorder=4,
                       c=[pal[p] for p in div["precision"]])
        is_text = (cf["task"] == "text").all()
        ax.set_ylabel("validation loss (nats)" if is_text else "validation accuracy (%)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        style.panel_title(ax, fam)
    _resolution_legend(fig, labels, kind="line")
    caption = (
        "Validation accuracy (validation loss for language models) per epoch; line: mean over "
        "seeds (solid: zero-free grids and fp32, dashed: zero-included grids, dotted: bnn), "
        "band: ± one standard deviation across seeds; ×: last epoch of a run that "
        "diverged (later epochs average the remaining seeds)." + _fixed_text(fixed)
    )
    return FigureOutput("learning_curves", "Learning curves", caption, fig)


# metric, y label, smallest top of the y axis (so all-zero panels keep a sane scale)
_STABILITY = (
    ("spread", "seed spread of accuracy\n(std, points)", 1.0),
    ("instability", "largest val-acc drop\n(points per run)", 1.0),
    ("div_rate", "divergence rate (%)", 5.0),
    ("spikes", "val-loss spikes per run", 0.5),
)
# Drawn when some run tracked it (RunConfig.track_oscillation): older studies have no such values.
_OSCILLATION = ("oscillation", "weight oscillation\n(% of weights per step)", 0.5)


def _config_stability(data: ReportData, df: pd.DataFrame) -> pd.DataFrame:
    keys = [*data.axes, "family", "precision", "bits", "grid", "k"]
    return (
        df.assign(div=df["diverged"].astype(float), instability=run_instability(df),
                  osc=run_oscillation(df, data.curves))
        .groupby(keys, dropna=False, sort=False)
        .agg(n=("run_id", "size"), spread=("acc", "std"), div_rate=("div", "mean"),
             spikes=("loss_spikes", "mean"), instability=("instability", "mean"),
             oscillation=("osc", "mean"))
        .reset_index()
        .assign(div_rate=lambda d: d["div_rate"] * 100)
    )


def _augment_fill(aug: str, augs: list[str], color: str) -> tuple[object, object, float]:
    """none: filled; the first augmentation: hollow; any further one: tinted."""
    if aug == "none":
        return color, "0.15", 0.4
    others = [a for a in augs if a != "none"]
    if others.index(aug) == 0:
        return "white", color, 1.1
    return to_rgba(color, 0.35), color, 1.1


def _augment_panel(ax: Axes, by_aug: pd.DataFrame, metric: str, labels: list[str],
                   augs: list[str]) -> None:
    """Augmentation off vs on per resolution: side by side, filled = none, hollow = augmented,
    joined by a thin line. Matplotlib: seaborn cannot draw hollow markers coloured by hue."""
    xpos = {label: i for i, label in enumerate(labels)}
    width = 0.56 / max(len(augs), 1)
    offsets = {a: (j - (len(augs) - 1) / 2) * width for j, a in enumerate(augs)}
    d = by_aug[by_aug["precision"].isin(xpos)]
    d = d.assign(x=d["precision"].map(xpos) + d["augment"].map(offsets)).sort_values("x")
    # The joining lines as one collection, the markers as one scatter per marker shape: a few
    # artists instead of one per point keeps the 8-panel figure quick to save three times.
    segs = [g[["x", metric]].to_numpy() for _, g in d.groupby("precision") if len(g) > 1]
    if segs:
        ax.add_collection(LineCollection(segs, colors=style.NEUTRAL, lw=0.7, zorder=1))
    fills = [_augment_fill(a, augs, style.color_for(p)) for p, a in zip(d["precision"],
                                                                     d["augment"], strict=True)]
    d = d.assign(marker=[style.GRID_MARKERS.get(grid_kind(p) or "", "o") for p in d["precision"]],
                 face=[f[0] for f in fills], edge=[f[1] for f in fills], lw=[f[2] for f in fills])
    for marker, g in d.groupby("marker"):
        ax.scatter(g["x"], g[metric], marker=marker, s=24, zorder=3, facecolors=list(g["face"]),
                   edgecolors=list(g["edge"]), linewidths=list(g["lw"]))
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xlabel("resolution (bits)")


def stability(data: ReportData) -> FigureOutput:
    if data.runs.empty:
        raise Unavailable("no completed runs")
    df, fixed = headline_slice(data.runs, data.axes, keep=["augment"])
    cfg = _config_stability(data, df)
    augs = sorted(cfg["augment"].dropna().unique(), key=lambda a: (a != "none", a))
    labels = order_precisions(cfg["precision"])
    pal = style.palette(labels)
    metrics = _STABILITY + ((_OSCILLATION,) if cfg["oscillation"].notna().any() else ())
    fig, axes = style.new_figure(2, len(metrics), width=style.DOUBLE_COLUMN_IN, height=4.8)
    notes = []
    top_letters = string.ascii_lowercase[:len(metrics)]
    bottom_letters = string.ascii_lowercase[len(metrics):2 * len(metrics)]
    for j, (metric, ylabel, min_top) in enumerate(metrics):
        # Top: augmentation off vs on. Models pooled: mean of the per-configuration values.
        ax = axes[0, j]
        by_aug = (cfg.groupby(["augment", "precision"], dropna=False)[metric]
                  .mean().reset_index().dropna(subset=[metric]))
        _augment_panel(ax, by_aug, metric, labels, augs)
        ax.set_ylabel(ylabel)
        # Five panels a row leave too little width for the long word: the last title ran off.
        style.panel_title(ax, f"({top_letters[j]}) "
                          + ("augmentation" if len(metrics) <= len(_STABILITY) else "augment"))
        _nonnegative_limits(ax, by_aug[metric], min_top)
        if by_aug.empty:
            _empty_panel(ax, "needs ≥ 2 seeds\nper configuration" if metric == "spread"
                         else "no data")
        # Bottom: zero in vs out at equal bit budget k, pooled over augmentation and models.
        ax = axes[1, j]
        z = cfg[cfg["grid"].isin(["zero", "no zero"])]
        by_k = (z.groupby(["k", "grid", "precision"], dropna=False)[metric].mean().reset_index()
                .dropna(subset=[metric, "k"]))
        if len(by_k):
            # Nudge the two grids of one k apart so equal values do not hide each other.
            by_k = by_k.assign(k=by_k["k"].astype(float)
                               + np.where(by_k["grid"] == "zero", 0.07, -0.07))
            _grid_lines(ax, by_k, "k", metric)
            sns.scatterplot(data=by_k, x="k", y=metric, hue="precision", palette=pal, style="grid",
                            markers=style.GRID_MARKERS, ax=ax, legend=False, s=24,
                            edgecolor="0.15", linewidth=0.4, zorder=3)
        ref = cfg[cfg["precision"] == "fp32"][metric].mean()
        if pd.notna(ref):
            ax.axhline(ref, color="black", lw=0.9, ls=":")
        ax.set_xticks([1, 2, 3, 4])
        ax.set_xlim(0.6, 4.4)
        ax.set_xlabel("bit budget k")
        ax.set_ylabel(ylabel)
        style.panel_title(ax, f"({bottom_letters[j]}) zero in / out")
        _nonnegative_limits(ax, pd.concat([by_k[metric], pd.Series([ref])]), min_top)
        if by_k.empty:
            _empty_panel(ax, "needs ≥ 2 seeds\nper configuration" if metric == "spread"
                         else "no level-grid data")
    if cfg["spread"].isna().all():
        notes.append("stability: one seed per configuration, so no seed spread")
    if len(augs) < 2:
        notes.append("stability: a single augmentation setting, so no augmentation comparison")
    if not set(cfg["grid"]) >= {"zero", "no zero"}:
        notes.append("stability: zero-included and zero-free grids are not both present")
    extra = []
    for a in augs:
        face, _, _ = _augment_fill(a, augs, "0.45")
        extra.append(Line2D([], [], ls="", marker="o", mfc=face, mec="0.3",
                            label=f"augment: {a}"))
    if (cfg["precision"] == "fp32").any():
        extra.append(Line2D([], [], color="black", lw=0.9, ls=":", label="fp32 (bottom row)"))
    _style_legend(fig, [g for g in cfg["grid"].unique() if g != "fp32"], fp32_line=False,
                  extra=extra)
    _resolution_legend(fig, labels)
    caption = (
        "Training stability against resolution. Per configuration (model x setting x "
        "resolution): standard deviation of the accuracy across seeds, mean largest "
        "epoch-to-epoch fall of validation accuracy per run (a diverged run counts as losing "
        "its best accuracy; the instability of claims C3/C4), share of runs that diverged, and "
        "mean count of validation-loss spikes (a rise of more than 10% over the previous epoch) "
        "per run"
        + (", and the weight oscillation (share of quantised weights whose level moved back "
           "against its previous move, an EMA over steps at the last epoch, Nagel et al. 2022; "
           "runs that tracked it)" if len(metrics) > len(_STABILITY) else "")
        + ", then averaged over models. "
        "Top: each resolution without augmentation (filled, left) and with it (hollow, then "
        "tinted for a second kind, left to right in legend order). "
        "Bottom: zero-free grids (2^k levels, circles, solid) against zero-included grids "
        "(2^k+1 levels, squares, dashed) at the same bit budget k, pooled over augmentation; "
        "dotted: fp32." + _fixed_text(fixed)
    )
    return FigureOutput("stability", "Training stability", caption, fig, notes)


# The lr-stress figure: the two level-grid kinds side by side, fp32 and bnn in both as references.
_LR_COLUMNS = ("no zero", "zero")
_LR_REFERENCES = ("fp32", "bnn")


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


def _lr_axis(ax: Axes, multiples: pd.Series, *, last: bool) -> None:
    ms = sorted(float(m) for m in multiples.unique())
    ax.set_xscale("log")
    ax.set_xticks(ms, [f"{multiple_label(m)}×" for m in ms])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(ms[0] / 1.4, ms[-1] * 1.4)
    ax.tick_params(axis="x", labelbottom=last)
    if last:
        ax.set_xlabel("learning rate (multiple of the sweep's smallest)")


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
        _empty_panel(top, f"no {style.GRID_NAMES[grid]} runs")


def lr_stability(data: ReportData) -> FigureOutput:
    if not has_lr_variation(data):
        raise Unavailable(f"fewer than {MIN_LRS} learning rates per setting: the study sweeps no lr")
    df, fixed = headline_slice(data.runs, data.axes, keep=["lr"])
    lv = lr_levels(dataclasses.replace(data, runs=df))
    lv = lv.assign(div_pct=lv["div_share"] * 100)
    families = sorted(lv["family"].unique())
    labels = order_precisions(lv["precision"])
    pal = style.palette(labels)
    fig, axes = style.new_figure(2 * len(families), len(_LR_COLUMNS),
                                 width=style.DOUBLE_COLUMN_IN, height=1.75 * len(families) + 1.0,
                                 height_ratios=[2.6, 1.0] * len(families))
    for i, fam in enumerate(families):
        f = lv[lv["family"] == fam]
        for j, grid in enumerate(_LR_COLUMNS):
            top, bottom = axes[2 * i, j], axes[2 * i + 1, j]
            _lr_pair(top, bottom, f, grid, pal)
            _lr_axis(top, lv["multiple"], last=False)
            _lr_axis(bottom, lv["multiple"], last=i == len(families) - 1)
            style.panel_title(top, f"{fam}: {style.GRID_NAMES[grid]}")
            top.set_ylabel(f"{_acc_name(data)} (%)" if j == 0 else "")
            bottom.set_ylabel("diverged\n(% of seeds)" if j == 0 else "")
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
        f"Where training breaks. {_acc_name(data).capitalize()} (top of each pair: mean over "
        "the seeds that did not diverge; a gap: every seed diverged) and share of seeds that "
        "diverged (bottom) against the learning rate as a multiple of the sweep's smallest "
        "(log scale), one pair of rows per model; left: zero-free grids (2^k levels, circles, "
        "solid), right: zero-included grids (2^k+1 levels, squares, dashed); fp32 (diamonds) "
        "and bnn (stars), dotted, in both as references. The max stable lr of every setting is "
        "in the max_stable_lr table." + _fixed_text(fixed)
    )
    return FigureOutput("lr_stability", "Learning-rate stability", caption, fig, notes)


def _nonnegative_limits(ax: Axes, values: pd.Series, min_top: float) -> None:
    """Counts, rates and spreads cannot be negative: start the axis at 0 (a hair below, so
    markers at 0 are whole) and give all-zero panels a readable scale instead of ±0.05."""
    finite = pd.to_numeric(values, errors="coerce").dropna()
    top = max(min_top, float(finite.max()) * 1.12) if len(finite) else min_top
    ax.set_ylim(-0.04 * top, top)


def _empty_panel(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def epochs_to_fp32(data: ReportData) -> FigureOutput:
    """A heat map per model: resolution x model size, cell = median epochs to reach fp32.

    A table-like map rather than lines over parameter count: with several resolutions failing
    at one size, "not reached" markers piled on one another (or, dodged, sat at sizes that were
    never trained); cells show each resolution and size once, hatched where it never got there.
    """
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
           .agg(median=("reached", "median"), budget=("budget", "max"), n=("run_id", "size"),
                hit=("epoch_reached", lambda s: int(s.notna().sum())),
                params=("params", "median"))
           .reset_index())
    # One label per model size: the fp32 parameter count (quantised variants differ slightly).
    sizes = (agg.sort_values("precision", key=lambda p: p != "fp32")
             .groupby(["family", "size"])["params"].first())
    families = sorted(agg["family"].dropna().unique())
    vmax = float(agg["budget"].max())
    n_rows = max(agg.groupby("family")["precision"].nunique())
    n_cols = max(agg.groupby("family")["size"].nunique())
    ncols = 1 if len(families) == 1 else 2
    nrows = math.ceil(len(families) / ncols)
    width = style.SINGLE_COLUMN_IN if len(families) == 1 and n_cols <= 4 else \
        style.DOUBLE_COLUMN_IN
    fig, axes = style.new_figure(nrows, ncols, width=width,
                                 height=max(2.0, nrows * (0.17 * n_rows + 0.75) + 0.3))
    style.hide_unused(axes, len(families))
    cmap = sns.color_palette("crest", as_cmap=True)
    mesh = None
    for ax, fam in zip(axes.flat, families, strict=False):
        a = agg[agg["family"] == fam]
        rows = order_precisions(a["precision"])
        cols = sorted(a["size"].unique())
        med = a.pivot_table(index="precision", columns="size", values="median",
                            dropna=False).reindex(index=rows, columns=cols)
        shown = med.where(np.isfinite(med))
        annot = shown.apply(lambda col: col.map(lambda v: "" if pd.isna(v) else f"{v:g}"))
        mesh = _heatmap(ax, shown, annot.to_numpy(), cmap=cmap, vmin=1, vmax=vmax, fontsize=6)
        cells = a.set_index(["precision", "size"])
        for i, prec in enumerate(rows):
            for j, size in enumerate(cols):
                if (prec, size) not in cells.index:
                    continue
                c = cells.loc[(prec, size)]
                if not np.isfinite(c["median"]):
                    # Hatched: trained, never got there (an untrained cell stays blank).
                    ax.add_patch(Rectangle((j, i), 1, 1, facecolor="0.94", edgecolor="0.75",
                                           hatch="////", lw=0, zorder=0.5))
                    ax.text(j + 0.5, i + 0.5, f"> {c['budget']:g}", ha="center", va="center",
                            fontsize=6, color="0.25")
        labels = [EngFormatter(sep="", places=0)(sizes.get((fam, c), np.nan))
                  if pd.notna(sizes.get((fam, c), np.nan)) else "?" for c in cols]
        ax.set_xticks(np.arange(len(cols)) + 0.5, labels, rotation=0)
        ax.set_yticks(np.arange(len(rows)) + 0.5, rows, rotation=0)
        ax.set_xlabel("parameters (one column per model width)")
        ax.set_ylabel("weight resolution (bits)")
        ax.tick_params(length=0)
        ax.grid(False)
        style.panel_title(ax, str(fam))
    if mesh is not None:
        fig.colorbar(mesh, ax=[a for a in axes.flat if a.get_visible()], shrink=0.9,
                     aspect=20, pad=0.02,
                     label="epochs (median over seeds)")
    caption = (
        f"Epochs a run needs before its validation accuracy comes within {MATCH_TOLERANCE:g} "
        "point of the mean final validation accuracy of the fp32 runs of its setting (median over "
        "seeds), per resolution (rows) and model size (columns, labelled with the fp32 parameter "
        "count), one panel per model. Hatched cells, \"> B\": the median run did not get there "
        "within its budget of B epochs (with two seeds, one run short of the fp32 mean is "
        "enough); blank cells: not trained." + _fixed_text(fixed)
    )
    notes = []
    if agg.groupby("family")["size"].nunique().max() < 2:
        notes.append("epochs to fp32: every model has one size, so no trend within a model")
    return FigureOutput("epochs_to_fp32", "Epochs to reach fp32 accuracy", caption, fig, notes)


def _heatmap(ax: Axes, values: pd.DataFrame, annot: np.ndarray, *, cmap, vmin: float,
             vmax: float, fontsize: float):
    """An annotated heat map: seaborn.heatmap's look (white cell borders, row 0 on top, text
    dark or light by cell luminance) without its full-figure draw per call, which it makes to
    check tick labels for overlap (0.6 s per panel on a 2x2 figure, paid again in each panel).
    NaN cells stay empty. Returns the mesh (for a colour bar)."""
    data = np.ma.masked_invalid(values.to_numpy(dtype=float))
    cmap = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    mesh = ax.pcolormesh(data, cmap=cmap, vmin=vmin, vmax=vmax, edgecolors="white", lw=0.6)
    nrows, ncols = data.shape
    ax.set_xlim(0, ncols)
    ax.set_ylim(nrows, 0)
    ax.set_xticks(np.arange(ncols) + 0.5, [str(c) for c in values.columns])
    ax.set_yticks(np.arange(nrows) + 0.5, [str(r) for r in values.index], va="center")
    for side in ("left", "bottom", "top", "right"):
        ax.spines[side].set_visible(False)
    colors = mesh.to_rgba(data)
    for i in range(nrows):
        for j in range(ncols):
            text = annot[i, j]
            if data.mask[i, j] or not text:
                continue
            lum = sns.utils.relative_luminance(colors[i, j])
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=fontsize,
                    color="0.15" if lum > 0.408 else "white")
    return mesh


def memory_vs_accuracy(data: ReportData) -> FigureOutput:
    runs = data.runs.dropna(subset=["acc", "stored_bytes"]) if len(data.runs) else data.runs
    if runs.empty:
        raise Unavailable("no completed run reports both accuracy and stored weight size")
    df, fixed = headline_slice(runs, data.axes, keep=["width"])
    agg = summarize(df, ["dataset", "family", "width", "precision"], "acc")
    size = (df.groupby(["dataset", "family", "width", "precision"], dropna=False)["stored_bytes"]
            .mean().rename("kib") / 1024).reset_index()
    agg = agg.merge(size, on=["dataset", "family", "width", "precision"])
    datasets = sorted(agg["dataset"].dropna().unique())
    labels = order_precisions(agg["precision"])
    pal = style.palette(labels)
    fams = sorted(agg["family"].unique())
    markers = dict(zip(fams, ["o", "s", "^", "D", "v", "P", "X", "p"] * 4, strict=False))
    fig, axes = _grid(len(datasets), row_height=2.5)
    for ax, ds in zip(axes.flat, datasets, strict=False):
        a = agg[agg["dataset"] == ds].sort_values("kib")
        front = a[a["mean"] > a["mean"].cummax().shift(fill_value=-np.inf)]
        ax.step(front["kib"], front["mean"], where="post", color="black", lw=0.9, zorder=1)
        sns.scatterplot(data=a, x="kib", y="mean", hue="precision", palette=pal, style="family",
                        markers=markers, ax=ax, legend=False, s=26, edgecolor="0.15",
                        linewidth=0.4, zorder=3)
        _log_x(ax, a["kib"], plain=True)
        ax.set_xlabel("stored weights (KiB)")
        ax.set_ylabel(f"{_acc_name(data)} (%)")
        style.panel_title(ax, str(ds))
    model_handles = [Line2D([], [], ls="", marker=markers[f], color="0.5", mec="0.15", mew=0.4,
                            label=f) for f in fams]
    model_handles.append(Line2D([], [], color="black", lw=0.9, label="Pareto front"))
    fit_legend(fig, model_handles, loc="outside upper center")
    _resolution_legend(fig, labels, kind="patch")
    packed = df["packed_bytes"].notna().mean()
    caption = (
        f"Stored weight size against {_acc_name(data)} (mean over seeds) for every model size and "
        "resolution; the staircase is the Pareto front (no other point is both smaller and more "
        f"accurate). Size: packed file size where recorded ({packed:.0%} of runs), else the "
        "quantised size from the bit count." + _fixed_text(fixed)
    )
    return FigureOutput("memory_vs_accuracy", "Memory vs accuracy", caption, fig)


def _acc_name(data: ReportData) -> str:
    return {"test_acc": "test accuracy", "val_acc": "final validation accuracy",
            "best_val_acc": "best validation accuracy"}.get(data.acc_col or "", "accuracy")


FIGURES: tuple[Callable[[ReportData], FigureOutput], ...] = (
    accuracy_vs_bits,
    gap_heatmap,
    learning_curves,
    stability,
    lr_stability,
    epochs_to_fp32,
    memory_vs_accuracy,
)
