"""Training stability against resolution: one row per measure (seed spread, largest accuracy
drop, divergence rate, loss spikes, weight oscillation), two columns: augmentation off vs on per
resolution, and zero-free vs zero-included grids at equal bit budget k. A measure that is zero
(or missing) for every configuration carries no information and is left out, and said so."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D

from suite.report import style
from suite.report.figures.common import (
    FigureOutput,
    Unavailable,
    fixed_text,
    grid_line_handles,
    grid_lines,
    nonnegative_limits,
    resolution_legend,
    single,
    x_bits,
)
from suite.report.frame import order_precisions
from suite.report.stats import ReportData, headline_slice, run_instability, run_oscillation

# metric, y label, smallest top of the y axis, name in the caption
_STABILITY = (
    ("spread", "seed spread\n(std, points)", 1.0, "seed spread"),
    ("instability", "largest val-acc\ndrop (points)", 1.0, "largest accuracy drop"),
    ("div_rate", "diverged (%)", 5.0, "divergence rate"),
    ("spikes", "val-loss spikes\nper run", 0.5, "validation-loss spikes"),
)
# Drawn when some run tracked it (RunConfig.track_oscillation): older studies have no such values.
_OSCILLATION = ("oscillation", "weight oscillation\n(% per step)", 0.5, "weight oscillation")


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


def _x_resolution(d: pd.DataFrame, top: int) -> pd.Series:
    """Bits on a numeric axis (bnn nudged left of 1), fp32 one step right of ``top`` bits."""
    return pd.Series(np.where(d["precision"] == "fp32", top + 1, x_bits(d)), index=d.index)


def _augment_panel(ax: Axes, by_aug: pd.DataFrame, metric: str, augs: list[str],
                   top: int) -> None:
    """Augmentation off vs on per resolution: side by side, filled = none, hollow = augmented,
    joined by a thin line. Matplotlib: seaborn cannot draw hollow markers coloured by hue."""
    step = 0.16 / max(len(augs) - 1, 1)
    offsets = {a: (j - (len(augs) - 1) / 2) * step for j, a in enumerate(augs)}
    d = by_aug.assign(x=_x_resolution(by_aug, top) + by_aug["augment"].map(offsets))
    d = d.sort_values("x")
    # The joining lines as one collection, the markers as one scatter per marker shape: a few
    # artists instead of one per point keeps the figure quick to save.
    segs = [g[["x", metric]].to_numpy() for _, g in d.groupby("precision") if len(g) > 1]
    if segs:
        ax.add_collection(LineCollection(segs, colors=style.NEUTRAL, lw=0.7, zorder=1))
    fills = [_augment_fill(a, augs, style.color_for(p))
             for p, a in zip(d["precision"], d["augment"], strict=True)]
    d = d.assign(marker=[style.GRID_MARKERS.get(g, "o") for g in d["grid"]],
                 face=[f[0] for f in fills], edge=[f[1] for f in fills], lw=[f[2] for f in fills])
    for marker, g in d.groupby("marker"):
        ax.scatter(g["x"], g[metric], marker=marker, s=22, zorder=3, facecolors=list(g["face"]),
                   edgecolors=list(g["edge"]), linewidths=list(g["lw"]))
    ax.set_xticks([*range(1, top + 2)], [*map(str, range(1, top + 1)), "fp32"])
    ax.set_xlim(0.6, top + 1.4)


def _zero_panel(ax: Axes, cfg: pd.DataFrame, metric: str, pal: dict[str, str],
                top: int) -> pd.Series:
    """Zero in vs out at equal bit budget k, pooled over augmentation and models; fp32 dotted.
    Returns the values drawn (for the row's limits)."""
    z = cfg[cfg["grid"].isin(["zero", "no zero"])]
    by_k = (z.groupby(["k", "grid", "precision"], dropna=False)[metric].mean().reset_index()
            .dropna(subset=[metric, "k"]))
    if len(by_k):
        # Nudge the two grids of one k apart so equal values do not hide each other.
        by_k = by_k.assign(k=by_k["k"].astype(float)
                           + np.where(by_k["grid"] == "zero", 0.07, -0.07))
        grid_lines(ax, by_k, "k", metric)
        sns.scatterplot(data=by_k, x="k", y=metric, hue="precision", palette=pal, style="grid",
                        markers=style.GRID_MARKERS, ax=ax, legend=False, s=22,
                        edgecolor="0.15", linewidth=0.4, zorder=3)
    ref = cfg[cfg["precision"] == "fp32"][metric].mean()
    if pd.notna(ref):
        ax.axhline(ref, color="black", lw=0.9, ls=":")
    ax.set_xticks([*range(1, top + 1)])
    ax.set_xlim(0.6, top + 0.4)
    return pd.concat([by_k[metric], pd.Series([ref])])


def stability(data: ReportData, width: float = style.DOUBLE_COLUMN_IN) -> FigureOutput:
    if data.runs.empty:
        raise Unavailable("no completed runs")
    df, fixed = headline_slice(data.runs, data.axes, keep=["augment"])
    cfg = _config_stability(data, df)
    augs = sorted(cfg["augment"].dropna().unique(), key=lambda a: (a != "none", a))
    labels = order_precisions(cfg["precision"])
    pal = style.palette(labels)
    candidates = _STABILITY + ((_OSCILLATION,) if cfg["oscillation"].notna().any() else ())
    # A measure with no nonzero value says nothing a sentence cannot: no panel for it.
    metrics = [m for m in candidates if cfg[m[0]].fillna(0).ne(0).any()]
    dropped = [m[3] for m in candidates if m not in metrics]
    if not metrics:
        raise Unavailable(f"every stability measure is zero or missing ({', '.join(dropped)})")
    top = _top_budget(cfg)
    narrow = single(width)
    fig, axes = style.new_figure(len(metrics), 2, width=width,
                                 height=1.2 * len(metrics) + 1.0,
                                 sharex="col", sharey="row")
    for i, (metric, ylabel, min_top, _) in enumerate(metrics):
        left, right = axes[i, 0], axes[i, 1]
        by_aug = (cfg.groupby(["augment", "precision", "bits", "grid"], dropna=False)[metric]
                  .mean().reset_index().dropna(subset=[metric]))
        _augment_panel(left, by_aug, metric, augs, top)
        shown = _zero_panel(right, cfg, metric, pal, top)
        nonnegative_limits(left, pd.concat([by_aug[metric], shown]), min_top)
        left.set_ylabel(ylabel, fontsize=7 if narrow else None)
        right.set_ylabel("")
        for ax in (left, right):
            ax.set_xlabel("")
    style.panel_title(axes[0, 0], "per resolution" if len(augs) < 2 else
                      "augment: off vs on" if narrow else "augmentation: off vs on")
    style.panel_title(axes[0, 1], "zero: out vs in" if narrow else "zero excluded vs included")
    axes[-1, 0].set_xlabel("weight resolution (bits)")
    axes[-1, 1].set_xlabel("bit budget k")
    notes = []
    if cfg["spread"].isna().all():
        notes.append("stability: one seed per configuration, so no seed spread")
    if len(augs) < 2:
        notes.append("stability: a single augmentation setting, so no augmentation comparison")
    if not set(cfg["grid"]) >= {"zero", "no zero"}:
        notes.append("stability: zero-included and zero-free grids are not both present")
    resolution_legend(fig, labels, extra=_legend_extra(cfg, augs))
    caption = _caption(metrics, dropped, oscillation=len(candidates) > len(_STABILITY),
                       augmented=len(augs) > 1) + fixed_text(fixed)
    return FigureOutput("stability", "Training stability", caption, fig, notes)


def _top_budget(cfg: pd.DataFrame) -> int:
    """Where the bit axes end: the largest bit budget trained (the stability study stops at
    k = 3), or the largest whole bit count of a grid without one."""
    bits = cfg.loc[cfg["precision"] != "fp32", "bits"].dropna()
    ks = cfg["k"].dropna()
    return max([1, *([int(ks.max())] if len(ks) else []),
                *([math.floor(float(bits.max()))] if len(bits) else [4])])


def _legend_extra(cfg: pd.DataFrame, augs: list[str]) -> list:
    """The legend entries beside the resolutions: grid lines, augmentation fills, fp32."""
    extra = grid_line_handles([g for g in cfg["grid"].unique() if g != "fp32"])
    if len(augs) > 1:
        for a in augs:
            face, _, _ = _augment_fill(a, augs, "0.45")
            extra.append(Line2D([], [], ls="", marker="o", mfc=face, mec="0.3",
                                label=f"augment: {a}"))
    if (cfg["precision"] == "fp32").any():
        extra.append(Line2D([], [], color="black", lw=0.9, ls=":", label="fp32 (right)"))
    return extra


def _caption(metrics: list[tuple], dropped: list[str], *, oscillation: bool,
             augmented: bool) -> str:
    return (
        "Training stability against resolution, one row per measure ("
        + ", ".join(m[3] for m in metrics) + "). Per configuration (model x setting x "
        "resolution): standard deviation of the accuracy across seeds, mean largest "
        "epoch-to-epoch fall of validation accuracy per run (a diverged run counts as losing "
        "its best accuracy; the instability of claims C3/C4), share of runs that diverged, mean "
        "count of validation-loss spikes (a rise of more than 10% over the previous epoch) per "
        "run"
        + (", and the weight oscillation (share of quantised weights whose level moved back "
           "against its previous move, an EMA over steps at the last epoch, Nagel et al. 2022; "
           "runs that tracked it)" if oscillation else "")
        + ", then averaged over models. "
        + (f"Left out, zero (or missing) for every configuration: {', '.join(dropped)}. "
           if dropped else "")
        + ("Left: each resolution without augmentation (filled) and with it (hollow, then "
           "tinted for a second kind, left to right in legend order), bnn just left of 1 bit. "
           if augmented else "Left: each resolution (bnn just left of 1 bit). ")
        + "Right: zero-free grids (2^k levels, circles, solid) against zero-included grids "
        "(2^k+1 levels, squares, dashed) at the same bit budget k, pooled over augmentation; "
        "dotted: fp32. Each row shares its y axis."
    )
