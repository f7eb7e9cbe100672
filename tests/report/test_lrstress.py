"""The learning-rate stress axis: max stable lr per setting and per seed on studies whose frontier
is known, the claims C3-lr and C4-lr, the max_stable_lr table, the lr_stability figure, the
oscillation panel, and a full report of an lr sweep."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from suite.report import build_report, style
from suite.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    LR_MARGIN,
    NOT_TESTED,
    SPECS,
    SUPPORTED,
    check_claim,
    evaluate_claims,
    rules_markdown,
)
from suite.report.figures import FIGURES, Unavailable, lr_stability, stability
from suite.report.frame import frames_from_records
from suite.report.lrstress import (
    CENSORED,
    INSIDE,
    NO_LR_VARIATION,
    NONE,
    STABLE_ACC_MARGIN,
    has_lr_variation,
    run_max_stable_lr,
    seed_frontier,
    setting_frontier,
    stress_axes,
)
from suite.report.stats import prepare, run_oscillation
from suite.report.synthetic import lr_stress_records
from suite.report.tables import TableUnavailable, max_stable_lr_table

LOG3, LOG10, LOG30 = math.log2(3), math.log2(10), math.log2(30)


def _data(records):
    return prepare(frames_from_records(records))


def _by_precision(starts: dict[str, float | None]):
    """breaks(): every seed of a resolution diverges from the same multiple."""
    return lambda run: starts.get(run["precision"])


# --- the frontier -----------------------------------------------------------------------------


def test_seeds_diverging_from_10x_give_a_max_stable_lr_of_3x():
    data = _data(lr_stress_records(_by_precision({"2": 10, "2.32": 30, "1": 1}),
                                   precisions=("fp32", "1", "2", "2.32")))
    front = setting_frontier(data).set_index("precision")
    assert front.loc["2", "max_stable_lr"] == pytest.approx(0.006)
    assert front.loc["2", "max_stable_multiple"] == pytest.approx(3)
    assert front.loc["2", "frontier"] == INSIDE
    assert front.loc["2.32", "max_stable_multiple"] == pytest.approx(10)
    # fp32 never diverges: stable at the top of the sweep, a censored limit
    assert front.loc["fp32", "frontier"] == CENSORED
    assert front.loc["fp32", "max_stable_lr"] == pytest.approx(0.06)
    # diverging from the smallest lr on: no stable lr at all
    assert front.loc["1", "frontier"] == NONE and np.isnan(front.loc["1", "max_stable_lr"])
    assert (front["lrs"] == 4).all() and np.allclose(front["smallest"], 0.002)


def test_per_seed_values_are_log2_of_the_multiple():
    starts = {0: 3, 1: 10, 2: None}
    data = _data(lr_stress_records(
        lambda r: starts[r["seed"]] if r["precision"] == "2" else (1 if r["precision"] == "1"
                                                                    else None),
        precisions=("fp32", "1", "2")))
    ms = seed_frontier(data).set_index(["precision", "seed"])
    assert ms.loc[("2", 0), "value"] == pytest.approx(0.0)  # stable at 1x only
    assert ms.loc[("2", 1), "value"] == pytest.approx(LOG3)
    assert ms.loc[("2", 2), "value"] == pytest.approx(LOG30)
    assert list(ms.loc["2", "status"]) == [INSIDE, INSIDE, CENSORED]
    # not stable even at the smallest: one grid step (x3) below it
    assert ms.loc["1", "value"].to_numpy() == pytest.approx([-LOG3] * 3)
    assert set(ms.loc["1", "status"]) == {NONE}
    # pooled, one seed diverging at 3x ends the setting's frontier at 1x
    front = setting_frontier(data).set_index("precision")
    assert front.loc["2", "max_stable_lr"] == pytest.approx(0.002)


def test_the_frontier_walks_up_from_the_smallest_lr():
    """Best at 1x, a 10-point dip at 3x, 10x and 30x good again: the limit stays at 1x."""
    dip = lr_stress_records(lambda r: None, precisions=("2",), accuracy=lambda r: (
        0.95 if r["multiple"] == 1 else 0.80 if r["multiple"] == 3 else 0.92))
    front = setting_frontier(_data(dip)).iloc[0]
    assert front["max_stable_multiple"] == pytest.approx(1) and front["frontier"] == INSIDE
    assert seed_frontier(_data(dip))["value"].to_numpy() == pytest.approx([0.0] * 3)


def test_an_under_trained_small_lr_is_not_instability():
    """20 points short at 1x (a budget too short for it), best at 3x, diverging from 30x: below
    the best lr only divergence counts, so the limit is 10x, not "none stable"."""
    slow = lr_stress_records(lambda r: 30, precisions=("2",), accuracy=lambda r: (
        0.70 if r["multiple"] == 1 else 0.95 if r["multiple"] == 3 else 0.93))
    front = setting_frontier(_data(slow)).iloc[0]
    assert front["max_stable_multiple"] == pytest.approx(10) and front["frontier"] == INSIDE
    assert seed_frontier(_data(slow))["value"].to_numpy() == pytest.approx([LOG10] * 3)


def test_accuracy_within_the_margin_counts_as_stable():
    assert STABLE_ACC_MARGIN == 5.0
    # 3 points down at 10x: stable; 11 points down at 30x: not, though nothing diverged
    runs = lr_stress_records(lambda r: None, precisions=("2",), accuracy=lambda r: 0.90 - (
        0.03 if r["multiple"] == 10 else 0.11 if r["multiple"] == 30 else 0.0))
    front = setting_frontier(_data(runs)).iloc[0]
    assert front["max_stable_multiple"] == pytest.approx(10)
    assert front["frontier"] == INSIDE


def test_a_seed_missing_a_run_before_its_break_has_no_value():
    runs = lr_stress_records(lambda r: 10, precisions=("2",))

    def missing(r, seed, lr):
        return r["result"]["seed"] == seed and r["result"]["lr"] == pytest.approx(lr)

    # seed 1 lacks its 3x run (before its break at 10x); seed 2 lacks its 30x run (after it)
    runs = [r for r in runs if not missing(r, 1, 0.006) and not missing(r, 2, 0.06)]
    ms = seed_frontier(_data(runs)).set_index("seed")
    assert list(ms.index) == [0, 2]
    assert ms["value"].to_numpy() == pytest.approx([LOG3, LOG3])


def test_one_lr_is_no_sweep():
    data = _data(lr_stress_records(_by_precision({"2": 10}), precisions=("fp32", "2", "2.32"),
                                   multiples=(1,)))
    assert not has_lr_variation(data)
    assert setting_frontier(data).empty and seed_frontier(data).empty
    assert run_max_stable_lr(data).empty
    for cid in ("C3-lr", "C4-lr"):
        res = check_claim(cid, data)
        assert res.verdict == NOT_TESTED and res.reason == NO_LR_VARIATION
        assert NO_LR_VARIATION == ("no learning-rate variation (needs at least 2 lr values per "
                                   "setting)")
    with pytest.raises(Unavailable, match="fewer than 2 learning rates"):
        lr_stability(data)
    with pytest.raises(TableUnavailable, match="no learning-rate variation"):
        max_stable_lr_table(data)


def test_lr_stays_a_setting_axis_of_the_other_claims():
    """setting_axes keeps a repeated lr as an axis: claim C3 compares runs at the same lr (one
    stratum per lr and resolution), while the stress analysis leaves lr out of its settings."""
    data = _data(lr_stress_records(_by_precision({"1": 10, "2": 30}),
                                   precisions=("fp32", "1", "2"), augments=("none", "standard")))
    assert "lr" in data.axes and "lr" not in stress_axes(data)
    assert check_claim("C3", data).strata == 2 * 4  # 2 low resolutions x 4 learning rates


# --- the claims ---------------------------------------------------------------------------------

_GRIDS = ("1", "1.58", "2", "2.32", "3", "3.17")
_ZERO = {"1.58", "2.32", "3.17"}


def _zero_study(zero_later: bool, *, zero_free_breaks: bool = True):
    """Zero-free grids: seeds 0-2 diverge from 3x, seed 3 from 10x; zero-included grids one grid
    step later (``zero_later``) or at the same multiples."""
    steps = {3: 10, 10: 30}

    def breaks(r):
        if not zero_free_breaks:
            return None
        start = 3 if r["seed"] < 3 else 10
        return steps[start] if zero_later and r["precision"] in _ZERO else start

    return _data(lr_stress_records(breaks, models=("fc", "cnn"), precisions=_GRIDS,
                                   seeds=(0, 1, 2, 3)))


def test_zero_grids_diverging_one_step_later_support_c4_lr():
    res = check_claim("C4-lr", _zero_study(zero_later=True))
    assert res.verdict == SUPPORTED, res
    assert res.strata == 6 and (res.n_a, res.n_b) == (24, 24)  # 2 models x k = 1..3
    # zero: 3 seeds at 3x and one at 10x; zero-free: 3 at 1x, one at 3x (in log2 units)
    assert res.estimate == pytest.approx((3 * LOG3 + LOG10) / 4 - LOG3 / 4)
    assert res.ci_low > 0 and res.ci_high > LR_MARGIN and not res.fragile


def test_zero_grids_diverging_at_the_same_lr_contradict_c4_lr():
    res = check_claim("C4-lr", _zero_study(zero_later=False))
    assert res.verdict == CONTRADICTED, res
    assert res.estimate == pytest.approx(0.0)
    assert -LR_MARGIN <= res.ci_low <= res.ci_high <= LR_MARGIN


def test_c4_lr_is_inconclusive_when_zero_free_grids_never_broke():
    res = check_claim("C4-lr", _zero_study(zero_later=False, zero_free_breaks=False))
    assert res.verdict == INCONCLUSIVE and res.holds == 1.0
    assert res.reason.startswith(SPECS["C4-lr"].test.censored)
    assert SPECS["C4-lr"].test.censored in SPECS["C4-lr"].rule


def _augment_study(fp32_lowered: bool):
    """Without augmentation low resolutions diverge from 10x (seed 3: 30x), with it from 3x
    (seed 3: 10x); fp32 the same way when ``fp32_lowered``, else never."""
    def breaks(r):
        if r["precision"] == "fp32" and not fp32_lowered:
            return None
        late = r["seed"] == 3
        if r["augment"] == "none":
            return 30 if late else 10
        return 10 if late else 3

    return _data(lr_stress_records(breaks, models=("fc", "cnn"),
                                   precisions=("fp32", "1", "2", "2.32"),
                                   augments=("none", "standard"), seeds=(0, 1, 2, 3)))


def test_augmentation_lowering_only_low_resolution_supports_c3_lr():
    res = check_claim("C3-lr", _augment_study(fp32_lowered=False))
    assert res.verdict == SUPPORTED, res
    assert res.strata == 6  # 2 models x 3 low resolutions, each against its model's fp32
    # none minus standard: seeds 0-2 lose a factor of 3 (3x -> 1x), seed 3 one of 10/3
    assert res.estimate == pytest.approx((3 * LOG3 + (LOG10 - LOG3)) / 4)


def test_augmentation_lowering_fp32_as_much_contradicts_c3_lr():
    res = check_claim("C3-lr", _augment_study(fp32_lowered=True))
    assert res.verdict == CONTRADICTED, res
    assert res.estimate == pytest.approx(0.0)


def test_c3_lr_needs_augmentation_variation_and_low_resolution():
    data = _data(lr_stress_records(_by_precision({"2": 10}), precisions=("fp32", "2")))
    assert "no augmentation variation" in check_claim("C3-lr", data).reason
    data = _data(lr_stress_records(_by_precision({"4": 10}), precisions=("fp32", "4"),
                                   augments=("none", "standard")))
    assert "no level-grid runs at ≤ 2.5 bits" in check_claim("C3-lr", data).reason


def test_the_rules_text_describes_the_lr_claims():
    md = rules_markdown()
    for cid in ("C3-lr", "C4-lr"):
        assert f"**{cid}**" in md and SPECS[cid].test.censored in md
        assert "log2" in SPECS[cid].statistic
    assert "censored" in md and f"within {STABLE_ACC_MARGIN:g} points" in md
    assert "a factor of 2 in lr" in md
    assert "C1-C4 (and C3-lr, C4-lr) get one row per quantiser" in md


def test_lr_claims_get_one_row_per_quantiser():
    runs = []
    for rule in ("gauss", "absmean"):
        for r in lr_stress_records(_by_precision({"2": 3, "2.32": 10}),
                                   precisions=("fp32", "2", "2.32")):
            r["config"]["scale_rule"] = r["result"]["scale_rule"] = rule
            r["run_id"] += f"-{rule}"
            runs.append(r)
    rows = {r.id: r for r in evaluate_claims(_data(runs), n_resamples=200)}
    for rule in ("gauss", "absmean"):
        row = rows[f"C4-lr (scale_rule = {rule})"]
        assert row.strata == 1 and row.estimate == pytest.approx(LOG3)  # 2.32: 3x, 2: 1x


# --- table and figures --------------------------------------------------------------------------


def test_max_stable_lr_table_columns_and_cells():
    data = _data(lr_stress_records(_by_precision({"2": 10, "1": 1}),
                                   precisions=("fp32", "1", "2")))
    df, numbers = max_stable_lr_table(data)
    assert list(df.columns) == ["dataset", "model", "resolution", "max stable lr",
                                "1×", "3×", "10×", "30×"]
    rows = df.set_index("resolution")
    assert list(rows.index) == ["1", "2", "fp32"]
    assert rows.loc["2", "max stable lr"] == "0.006 (3×)"
    assert rows.loc["fp32", "max stable lr"] == "≥ 0.06 (≥ 30×)"
    assert rows.loc["1", "max stable lr"] == "< 0.002 (< 1×)"
    assert rows.loc["2", "10×"] == "– (3/3)" and rows.loc["2", "3×"].endswith(" (0/3)")
    per_lr = [f"{n}_{m}x" for m in ("1", "3", "10", "30") for n in ("runs", "diverged", "acc")]
    assert list(numbers.columns[-len(per_lr):]) == per_lr
    assert {"precision", "max_stable_lr", "max_stable_multiple", "frontier"} <= set(numbers)
    two = numbers.set_index("precision").loc["2"]
    assert (two["diverged_3x"], two["diverged_10x"], two["runs_10x"]) == (0.0, 1.0, 3)
    assert np.isnan(two["acc_10x"]) and two["acc_1x"] > 80


def _stress_data(**kwargs):
    return _data(lr_stress_records(_by_precision({"1": 3, "1.58": 10, "2": 10, "2.32": 30}),
                                   models=("fc", "cnn"),
                                   precisions=("fp32", "bnn", "1", "1.58", "2", "2.32"), **kwargs))


def test_lr_stability_figure_draws(tmp_path):
    assert "lr_stability" in [f.__name__ for f in FIGURES]
    with style.paper_style():
        out = lr_stability(_stress_data())
        paths = style.save_figure(out.fig, tmp_path / out.name, ("png", "pdf"))
    png = tmp_path / "lr_stability.png"
    assert png in paths and (tmp_path / "lr_stability.pdf").stat().st_size > 1000
    img = mpimg.imread(png)
    assert abs(img.shape[1] / style.DPI - style.DOUBLE_COLUMN_IN) < 0.05
    assert img[..., :3].std() > 0.05
    axes = [ax for ax in out.fig.axes if ax.get_visible()]
    assert len(axes) == 2 * 2 * 2  # 2 models x (accuracy, divergence) x 2 grid kinds
    # cnn, zero-free: the 1- and 2-bit grids plus the fp32 and bnn references
    top, bottom = axes[0], axes[2]
    assert len(top.get_lines()) == len(bottom.get_lines()) == 4
    two = [ln for ln in bottom.get_lines() if ln.get_color() == style.color_for("2")][0]
    assert list(two.get_ydata()) == [0, 0, 100, 100]  # every seed diverges from 10x
    acc = [ln for ln in top.get_lines() if ln.get_color() == style.color_for("2")][0]
    assert np.isnan(acc.get_ydata()[2:]).all() and np.isfinite(acc.get_ydata()[:2]).all()


def test_stability_figure_gains_an_oscillation_panel_when_runs_tracked_it():
    with style.paper_style():
        plain = stability(_stress_data())
        tracked = stability(_stress_data(oscillation=True))
    # a row of two panels per measure; measures zero everywhere (here at the smallest lr: no
    # divergence, no spikes) are left out of both
    assert sum(ax.get_visible() for ax in tracked.fig.axes) == \
        sum(ax.get_visible() for ax in plain.fig.axes) + 2
    assert "oscillation" in tracked.fig.axes[-2].get_ylabel()  # the last row, one per measure
    assert "oscillation" in tracked.caption and "oscillation" not in plain.caption


def test_run_oscillation_reads_results_else_curves():
    records = lr_stress_records(lambda r: None, precisions=("fp32", "2"), oscillation=True,
                                multiples=(1, 4))
    data = _data(records)
    osc = run_oscillation(data.runs, data.curves).groupby(data.runs["precision"]).mean()
    assert np.isnan(osc["fp32"]) and osc["2"] == pytest.approx(100 * 0.01 * (1 + 2) / 2)
    for r in records:  # an old result without the fields: the curves' last epoch
        r["result"].pop("oscillation")
        r["result"].pop("max_oscillation")
    data = _data(records)
    osc = run_oscillation(data.runs, data.curves).groupby(data.runs["precision"]).mean()
    assert osc["2"] == pytest.approx(1.5)


# --- a full report --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stress_report(tmp_path_factory):
    records = lr_stress_records(_by_precision({"1": 1, "2": 10, "2.32": 30}),
                                precisions=("fp32", "bnn", "1", "2", "2.32"),
                                augments=("none", "standard"), oscillation=True)
    frames = frames_from_records(records, study_name="stress")
    out = tmp_path_factory.mktemp("stress") / "report"
    report = build_report(frames, out, study="stress", formats=("png",), workers=1)
    return out, report.read_text()


def test_report_of_an_lr_sweep_has_the_table_figure_and_column(stress_report):
    out, md = stress_report
    for ext in ("csv", "md", "tex"):
        assert (out / "tables" / f"max_stable_lr.{ext}").stat().st_size > 0
    assert (out / "figures" / "lr_stability.png").stat().st_size > 1000
    assert "ERROR" not in md and "### Max stable learning rate" in md
    assert "censored" in md.split("### Max stable learning rate")[1]
    assert "figure lr_stability" not in md  # drawn, so no note
    results = pd.read_csv(out / "results.csv")
    limit = results.groupby("precision")["max_stable_lr"]
    assert limit.nunique(dropna=False).eq(1).all()  # one value per setting, every run
    first = limit.first()
    assert (first["2"], first["2.32"], first["fp32"]) == pytest.approx((0.006, 0.02, 0.06))
    assert results.loc[results["precision"] == "1", "max_stable_lr"].isna().all()
    assert results["oscillation"].notna().any()
    assert pd.read_csv(out / "curves.csv")["oscillation"].notna().any()
    claims = pd.read_csv(out / "tables" / "claims.csv").set_index("id")
    assert {"C3-lr", "C4-lr"} <= set(claims.index)
    assert claims.loc["C4-lr", "strata"] > 0  # 2 vs 2.32 at k = 2, per augmentation
