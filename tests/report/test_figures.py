"""The report's figures as a journal takes them: every figure at 3.5 in and 7 in (the PNG's pixel
width is inches x dpi), no text under 6 pt at print size, and each figure's fixes of issue 24,
checked on the committed default study (real runs) and on a synthetic one; and a rebuilt report
leaves the files of figures whose data did not change as they were, bytes and mtime."""

from __future__ import annotations

import gzip
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.collections import LineCollection, QuadMesh
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from suite.report import build_report, load_study, style
from suite.report.figures import (
    FIGURES,
    accuracy_vs_bits,
    epochs_to_fp32,
    gap_heatmap,
    learning_curves,
    lr_stability,
    stability,
)
from suite.report.frame import bit_budget, frames_from_records
from suite.report.stats import prepare
from suite.report.synthetic import lr_stress_records, synthetic_records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default_data(tmp_path_factory: pytest.TempPathFactory):
    """The committed default study (468 real runs): widths, augmentation, a language model."""
    journal = tmp_path_factory.mktemp("default") / "optuna.journal"
    journal.write_bytes(gzip.decompress((ROOT / "reports/default/optuna.journal.gz").read_bytes()))
    return prepare(load_study("default", str(journal)))


@pytest.fixture(scope="module")
def stress_data():
    """A learning-rate sweep, the one study kind that draws lr_stability."""
    frontier = {"1": 3, "1.58": 10, "2": 10, "2.32": 30}
    return prepare(frames_from_records(lr_stress_records(
        lambda run: frontier.get(run["precision"]), models=("fc", "cnn"))))


def _draw(make, data, width: float):
    with style.paper_style():
        return make(data, width)


def _visible_texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
            and (t.axes is None or t.axes.get_visible())]


@pytest.mark.parametrize("suffix", list(style.FIGURE_WIDTHS))
def test_every_figure_has_its_column_width_in_pixels_and_no_text_under_6pt(
        suffix, default_data, stress_data, tmp_path):
    width = style.FIGURE_WIDTHS[suffix]
    for make in FIGURES:
        data = stress_data if make is lr_stability else default_data
        out = _draw(make, data, width)
        png = style.save_figure(out.fig, tmp_path / style.figure_stem(out.name, suffix),
                                ("png",))[0]
        img = mpimg.imread(png)
        w_in, h_in = out.fig.get_size_inches()
        assert w_in == width, (out.name, w_in)
        assert img.shape[1] == round(width * style.DPI), (out.name, img.shape)
        assert img.shape[0] == round(h_in * style.DPI), (out.name, img.shape)
        assert h_in <= 9.75, f"{out.name} at {width} in is {h_in} in tall"  # fits a page
        small = [(t.get_text(), t.get_fontsize()) for t in _visible_texts(out.fig)
                 if t.get_fontsize() < style.MIN_FONT_PT]
        assert not small, f"{out.name} at {width} in: text under 6 pt {small[:5]}"
        # Nothing cut off at the figure's edge: all that is drawn lies inside the canvas.
        out.fig.canvas.draw()  # lay out again at screen dpi (the save drew at 300)
        tight = out.fig.get_tightbbox(out.fig.canvas.get_renderer())  # inches
        slack = 1 / 72
        assert tight.x0 >= -slack and tight.x1 <= w_in + slack, (out.name, width, tight)
        assert tight.y0 >= -slack and tight.y1 <= h_in + slack, (out.name, width, tight)


def test_accuracy_vs_bits_one_legend_intervals_inside_0_100_and_an_outlier_kept_at_the_edge(
        tmp_path):
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(gzip.decompress(
        (ROOT / "reports/stability/optuna.journal.gz").read_bytes()))
    out = _draw(accuracy_vs_bits, prepare(load_study("stability", str(journal))),
                style.DOUBLE_COLUMN_IN)
    assert len(out.fig.legends) == 1
    for ax in out.fig.axes:
        lo, hi = ax.get_ylim()
        assert 0 <= lo < hi <= 100
        for coll in ax.collections:
            if isinstance(coll, LineCollection):
                for seg in coll.get_segments():
                    assert np.all((seg[:, 1] >= lo - 1e-9) & (seg[:, 1] <= hi + 1e-9))
    # cnn's bnn on fashion-mnist (26% among means of 63-72%) would stretch its panel fourfold:
    # it is marked at the panel's lower edge with its value, and the panel spans the others.
    cnn = next(ax for ax in out.fig.axes if ax.get_title(loc="left") == "cnn (fashion-mnist)")
    assert cnn.get_ylim()[0] > 50
    assert [t.get_text() for t in cnn.texts] == ["26"]
    assert "arrowhead with a number" in out.caption


def test_gap_heatmap_fades_uncertain_cells_and_marks_the_clip_at_both_ends(default_data):
    out = _draw(gap_heatmap, default_data, style.DOUBLE_COLUMN_IN)
    colorbar_ax = [ax for ax in out.fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbar_ax) == 1
    # the default study has gaps past both ends of the colour scale (-27.4 and +9.1)
    assert colorbar_ax[0]._colorbar.extend == "both"
    assert "pointed end(s)" in out.caption and "Pale cells" in out.caption
    panel = out.fig.axes[0]
    by_text = {t.get_text(): t for t in panel.texts}
    # fc bnn without augmentation: -0.2 ± 1.5 spans 0, grey text; cnn bnn -10.3 ± 4.6 does not
    assert by_text["-0.2\n±1.5"].get_color() == "0.4"
    assert by_text["-10.3\n±4.6"].get_color() != "0.4"
    mesh = next(c for c in panel.collections if isinstance(c, QuadMesh))
    faces = mesh.get_facecolor()
    assert len(faces) == panel.get_xlim()[1] * panel.get_ylim()[0]
    lightest = faces[:, :3].min(axis=1)
    assert (lightest > 0.6).sum() > (lightest <= 0.6).sum()  # most cells pale: a small study
    assert all(t.get_fontsize() >= style.MIN_FONT_PT for t in panel.texts)


def test_learning_curves_are_small_multiples_with_lines_told_apart_without_colour(default_data):
    out = _draw(learning_curves, default_data, style.DOUBLE_COLUMN_IN)
    for ax in out.fig.axes:
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 1]
        assert 2 <= len(lines) <= 4, (ax.get_title(), len(lines))  # was 10 per panel
        by_k: dict[int, list] = {}
        for ln in lines:
            if ln.get_color() in ("#000000", "black"):
                continue  # the fp32 reference in every panel
            label = next(p for p, c in style.PRECISION_COLORS.items()
                         if c.lower() == str(ln.get_color()).lower())
            if (k := bit_budget(label)) is not None:
                by_k.setdefault(k, []).append(ln)
        for k, pair in by_k.items():
            assert len(pair) == 2, k
            a, b = pair  # 4 vs 4.09, 3 vs 3.17, ...: dash and marker differ, not just colour
            assert a.get_linestyle() != b.get_linestyle() and a.get_marker() != b.get_marker()
    titles = [ax.get_title(loc="left") for ax in out.fig.axes if ax.get_title(loc="left")]
    assert titles == ["k = 1", "k = 2", "k = 3", "k = 4"]


def test_stability_leaves_out_all_zero_measures_and_titles_do_not_repeat(default_data):
    out = _draw(stability, default_data, style.DOUBLE_COLUMN_IN)
    runs = default_data.runs
    assert not runs["diverged"].any()  # nothing diverged in the default study's headline
    ylabels = [ax.get_ylabel() for ax in out.fig.axes if ax.get_ylabel()]
    assert ylabels and not any("diverged" in y for y in ylabels)
    assert "Left out, zero (or missing) for every configuration: divergence rate" in out.caption
    assert len(out.fig.axes) == 2 * len(ylabels) <= 10  # two columns, one row per measure
    titles = [ax.get_title(loc="left") for ax in out.fig.axes if ax.get_title(loc="left")]
    assert len(titles) == len(set(titles)) == 2
    for ax in out.fig.axes:
        for label in ax.get_xticklabels():
            assert label.get_rotation() == 0


def test_epochs_to_fp32_has_no_untrained_cells_and_honest_axis_labels(default_data):
    for width in style.FIGURE_WIDTHS.values():
        out = _draw(epochs_to_fp32, default_data, width)
        panels = [ax for ax in out.fig.axes if ax.get_label() != "<colorbar>"]
        assert len(panels) == 3  # every model at its main width; cnn and fc across widths
        for ax in panels:
            mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
            masked = int(np.ma.getmaskarray(mesh.get_array()).sum())
            hatched = sum(1 for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch())
            assert masked == hatched, ax.get_title(loc="left")  # a gap is "never reached" only
            assert "one column per model width" not in ax.get_xlabel()
        assert panels[0].get_xlabel().startswith("model")
        assert [t.get_text().split("\n")[0] for t in panels[0].get_xticklabels()] == \
            ["cnn (digits)", "fc (digits)", "lm (stdlib-text)", "vit (digits)"]


def _figure_files(fig_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(fig_dir.iterdir())}


def test_a_rebuilt_report_leaves_unchanged_figures_untouched(tmp_path):
    frames = frames_from_records(synthetic_records(models=("fc",), widths={"fc": (64, 256)},
                                                   failed=0))
    out = tmp_path / "demo"
    build_report(frames, out, study="demo", workers=1)
    first = _figure_files(out / "figures")
    names = {Path(n).stem for n in first}
    assert {"accuracy_vs_bits", "accuracy_vs_bits_1col", "stability", "stability_1col"} <= names
    assert {Path(n).suffix for n in first} == {".pdf", ".svg", ".png"}
    (out / "figures" / "gone.png").write_bytes(b"a figure an earlier build drew")
    build_report(frames, out, study="demo", workers=2)
    assert _figure_files(out / "figures") == first  # same bytes, same mtimes, stale file gone
    # The report links both widths of each figure.
    md = (out / "report.md").read_text()
    assert "[PNG](figures/stability.png)" in md and "[PNG](figures/stability_1col.png)" in md
