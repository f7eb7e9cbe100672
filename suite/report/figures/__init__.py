"""The report's figures: one module per figure, each with a draw function named after it that
takes the prepared ReportData and a width in inches (style.FIGURE_WIDTHS: the report writes every
figure at 7 in and at 3.5 in) and returns a FigureOutput, or raises Unavailable with the reason
when the study lacks what the figure needs. common.py holds what they share.

Means and intervals are computed with pandas (stats.py) and the aggregates are plotted, which
keeps a 10,000-run study fast and makes figures and tables agree on every number.

To add a figure: a module with its draw function, listed in FIGURES below (its name is the
figure's name and file stem); FIGURES' order is the order of report.md.
"""

from __future__ import annotations

from collections.abc import Callable

from suite.report import style
from suite.report.figures.accuracy_vs_bits import accuracy_vs_bits
from suite.report.figures.common import FigureOutput, Unavailable, fit_legend
from suite.report.figures.epochs_to_fp32 import epochs_to_fp32
from suite.report.figures.gap_heatmap import gap_heatmap
from suite.report.figures.learning_curves import learning_curves
from suite.report.figures.lr_stability import lr_stability
from suite.report.figures.memory_frontier import memory_frontier
from suite.report.figures.stability import stability

DrawFigure = Callable[..., FigureOutput]  # (data: ReportData, width: float) -> FigureOutput

FIGURES: tuple[DrawFigure, ...] = (
    accuracy_vs_bits,
    gap_heatmap,
    learning_curves,
    stability,
    lr_stability,
    epochs_to_fp32,
    memory_frontier,
)


def by_name() -> dict[str, DrawFigure]:
    """Each figure's draw function under the figure's name (= its files' stem at 7 in)."""
    return {f.__name__: f for f in FIGURES}


def drawer(stem: str) -> tuple[DrawFigure, float] | None:
    """The draw function and width that make the figure files named ``stem`` (e.g.
    ``stability_1col``: stability at 3.5 in); None for a stem no figure writes."""
    for make in FIGURES:
        for suffix, width in style.FIGURE_WIDTHS.items():
            if style.figure_stem(make.__name__, suffix) == stem:
                return make, width
    return None


__all__ = ["FIGURES", "DrawFigure", "FigureOutput", "Unavailable", "by_name", "fit_legend",
           "drawer",
           "accuracy_vs_bits", "epochs_to_fp32", "gap_heatmap", "learning_curves",
           "lr_stability", "memory_frontier", "stability"]
