"""Paper style: widths, fonts, and one fixed colour per resolution label across every figure.

Colours come from Paul Tol's colour-blind-safe "muted" scheme. The two grids of one bit budget k
(2^k levels without zero, 2^k + 1 with zero) share a hue family, dark for zero-free and light for
zero-included, and the marker tells them apart too, so nothing rests on colour alone.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SINGLE_COLUMN_IN = 3.5
DOUBLE_COLUMN_IN = 7.0
# Every figure is written at both journal column widths: <name>.<fmt> at 7 in and
# <name>_1col.<fmt> at 3.5 in (the suffix says which file goes in a single column).
FIGURE_WIDTHS: dict[str, float] = {"": DOUBLE_COLUMN_IN, "_1col": SINGLE_COLUMN_IN}
MIN_FONT_PT = 6.0  # the smallest text at print size that journals accept
DPI = 300
FORMATS = ("pdf", "svg", "png")
FORMATS_IN_SAVE_ORDER = ("png", "pdf", "svg")


def parse_formats(text: str) -> tuple[str, ...]:
    """``"png,pdf"`` -> ("png", "pdf"); an unknown or empty list names the ones there are."""
    chosen = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in text.split(",")
                                 if f.strip()))
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise ValueError(f"figure formats {text!r}: choose one or more of "
                         f"{', '.join(FORMATS)}, comma-separated (e.g. --formats png,pdf)")
    return chosen


PRECISION_COLORS: dict[str, str] = {
    "1": "#332288",     # indigo      k = 1, no zero
    "1.58": "#88CCEE",  # cyan        k = 1, zero
    "2": "#117733",     # green       k = 2, no zero
    "2.32": "#44AA99",  # teal        k = 2, zero
    "3": "#882255",     # wine        k = 3, no zero
    "3.17": "#CC6677",  # rose        k = 3, zero
    "4": "#999933",     # olive       k = 4, no zero
    "4.09": "#DDCC77",  # sand        k = 4, zero
    "bnn": "#AA4499",   # purple      binary normalized {0, 1}
    "fp32": "#000000",  # black       the reference everywhere
}
# Labels outside the table (N=7, ...) draw from Tol's "bright" scheme, picked by a hash of the
# label so a label keeps its colour in every figure and every report.
_EXTRA_COLORS = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")

GRID_MARKERS: dict[str, str] = {"no zero": "o", "zero": "s", "bnn": "*", "fp32": "D"}
GRID_DASHES: dict[str, tuple[float, float] | str] = {
    "no zero": "", "zero": (4, 1.5), "bnn": (1, 1), "fp32": (1, 1),
}
GRID_NAMES: dict[str, str] = {
    "no zero": "zero excluded (2^k levels)",
    "zero": "zero included (2^k+1)",
    "bnn": "bnn {0,1}",
    "fp32": "fp32",
}
NEUTRAL = "0.45"

RC: dict[str, object] = {
    "pdf.fonttype": 42,  # TrueType: fonts embedded and editable, as publishers ask
    "ps.fonttype": 42,
    "svg.fonttype": "path",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "lines.linewidth": 1.2,
    "lines.markersize": 4.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.5,
    "axes.axisbelow": True,
    "legend.frameon": False,
    "savefig.dpi": DPI,
    "svg.hashsalt": "bitsweep",  # fixed ids: an SVG of unchanged data keeps its bytes
    "figure.dpi": 100,
}


def color_for(label: str) -> str:
    if label in PRECISION_COLORS:
        return PRECISION_COLORS[label]
    digest = int(hashlib.sha1(label.encode()).hexdigest(), 16)
    return _EXTRA_COLORS[digest % len(_EXTRA_COLORS)]


def palette(labels: list[str]) -> dict[str, str]:
    return {label: color_for(label) for label in labels}


@contextmanager
def paper_style() -> Iterator[None]:
    """Scoped rcParams: building a report must not restyle the caller's other plots."""
    with mpl.rc_context(RC):
        yield


def new_figure(
    nrows: int = 1, ncols: int = 1, *, width: float = SINGLE_COLUMN_IN, height: float | None = None,
    sharex: bool | str = False, sharey: bool | str = False,
    height_ratios: Sequence[float] | None = None,
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure on the Agg canvas (no pyplot: no global figure registry,
    no GUI backend, nothing to close)."""
    if height is None:
        height = 2.4 * nrows + 0.5
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    grid = {"height_ratios": list(height_ratios)} if height_ratios is not None else None
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey,
                        gridspec_kw=grid)
    return fig, axes


def blank_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure with no axes yet (for a layout of nested grids)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``stem``.<fmt> for each format and return the paths. The bytes depend
    only on the figure (fixed metadata, no dates, fixed SVG ids), and a file that already holds
    them is not written again: a rebuilt report leaves the figures of unchanged data untouched,
    mtime included."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in (f for f in FORMATS_IN_SAVE_ORDER if f in formats):
        path = stem.with_suffix(f".{fmt}")
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=_metadata(fmt))
        # The first save ran constrained layout; freeze it so the other formats skip the
        # layout pass (positions are figure fractions, the same at every dpi and backend).
        fig.set_layout_engine("none")
        write_if_changed(path, buf.getvalue())
        paths.append(path)
    return paths


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly that; True if written."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # never a half-written figure under the real name
    return True


def _metadata(fmt: str) -> dict[str, str | None]:
    # Fixed metadata keeps repeated builds byte-stable where the format allows it.
    if fmt == "pdf":
        return {"Creator": "bitsweep report", "Producer": None, "CreationDate": None}
    if fmt == "svg":
        return {"Creator": "bitsweep report", "Date": None}
    # PNG: without a fixed Software entry matplotlib writes its own version into the file.
    return {"Software": "bitsweep report"}


def hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def panel_title(ax: Axes, text: str) -> None:
    ax.set_title(text, loc="left", fontsize=8)


def figure_stem(name: str, suffix: str) -> str:
    """The file stem of figure ``name`` at the width of ``suffix`` (a FIGURE_WIDTHS key)."""
    return f"{name}{suffix}"
