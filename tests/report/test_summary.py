"""report.md as a results section: a plain summary first, each rule once, the metric named, claims a
study cannot test kept apart, collapsed runs flagged; and a tuned study compared by its best
trials."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from suite.report import build_report
from suite.report.claims import CLAIMS, NOT_TESTED, SPECS, evaluate_claims
from suite.report.frame import frames_from_records
from suite.report.lrstress import has_lr_variation
from suite.report.stats import prepare
from suite.report.summary import COLLAPSE_SHARE
from suite.report.synthetic import synthetic_records
from suite.report.tables import summary_table

PRECISIONS = ("fp32", "bnn", "1", "2", "2.32")


def _records(share: bool):
    records = synthetic_records(models=("fc",), precisions=PRECISIONS, seeds=(0, 1, 2),
                                augments=("none",), failed=0, epochs=(6,))
    for r in records:
        res = r["result"]
        if res["precision"] == "bnn":  # every seed predicts one class: accuracy = its share
            res.update(val_acc=0.2860, test_acc=0.2553, diverged=False, diverged_epoch=None)
        if share:
            res["top_class_share"] = 1.0 if res["precision"] == "bnn" else 0.31
    return records


def _section(md: str, title: str) -> str:
    start = md.index(f"## {title}\n")
    end = md.find("\n## ", start + 1)
    return md[start:end if end >= 0 else None]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "report"
    frames = frames_from_records(_records(share=True))
    md = build_report(frames, out, study="plain", workers=1, formats=("png",)).read_text()
    return frames, out, md


def test_report_opens_with_a_plain_summary(plain):
    frames, _, md = plain
    assert md.split("\n## ", 1)[1].startswith("Summary\n")
    summary = _section(md, "Summary")
    assert f"{len(frames.results)} trials" in summary
    assert "models fc on cifar10" in summary
    assert "resolutions bnn, 1, 2, 2.32, fp32" in summary and "seeds 0, 1, 2" in summary
    # which metric the numbers are, and what the sweep's terminal and Optuna showed instead
    assert "accuracies are `test_acc`" in summary and "`val_acc`, not `test_acc`" in summary
    for res in evaluate_claims(prepare(frames)):
        if res.verdict != NOT_TESTED:
            line = next(x for x in summary.splitlines() if f"**{res.id}**" in x)
            assert f"**{res.verdict}" in line and "holds in" in line
            assert f"{res.estimate:+.2f}" in line or np.isnan(res.estimate)


def test_each_rule_is_stated_once_and_rows_stay_short(plain):
    _, out, md = plain
    for claim in CLAIMS:
        assert md.count(claim.test.interval_rule) == 1, claim.id
        for pre in (claim.test.censored,):
            assert pre is None or md.count(pre) == 1, claim.id
    table = (out / "tables" / "claims.md").read_text().splitlines()
    assert "rule" not in table[0] and "statistic" not in table[0]
    assert max(len(row) for row in table) < 400
    assert "accuracies are test_acc" in _section(md, "Claims")
    assert "`test_acc (%)`" not in md and "| test_acc (%) |" in (
        out / "tables" / "summary.md").read_text()


def test_claims_the_design_cannot_test_are_not_tested_and_not_up_front(plain):
    frames, out, md = plain
    claims = pd.read_csv(out / "tables" / "claims.csv").set_index("id")
    # no lr grid axis: the lr-stress claims are not tested (never "inconclusive")
    assert claims.loc["C3-lr", "verdict"] == claims.loc["C4-lr", "verdict"] == NOT_TESTED
    assert "C3-lr" not in _section(md, "Could not compute")
    verdicts = _section(md, "Summary").split("**Verdicts**")[1].split("**Flagged**")[0]
    lines = [x for x in verdicts.splitlines() if x.strip().startswith("- ")]
    assert lines[-1].strip() == ("- not tested by this study's design: C2 (no width variation: "
                                 "every model has one size); C3 (no augmentation variation "
                                 "(needs runs with augment = none and with another)); C3-lr, "
                                 "C4-lr (no learning-rate "
                                 "variation (needs at least 2 lr values per setting)); C1-mem, "
                                 "C6, C7 (no width axis: every resolution was trained at one "
                                 "width (accuracy at equal stored bytes needs each resolution's "
                                 "curve over widths))")
    assert all("not tested" not in x for x in lines[:-1])


def test_collapsed_runs_are_marked_and_flagged(plain):
    _, out, md = plain
    results = pd.read_csv(out / "results.csv")
    bnn = results["precision"] == "bnn"
    assert results.loc[bnn, "collapsed"].all() and not results.loc[~bnn, "collapsed"].any()
    assert list(results.columns[-2:]) == ["collapsed", "max_stable_lr"]
    flagged = _section(md, "Summary").split("**Flagged**")[1]
    assert f"collapsed: model fc, precision bnn: 3 run(s) give one class to ≥ " \
           f"{COLLAPSE_SHARE:.0%}" in flagged
    assert "precision 2.32" not in flagged


def test_runs_without_the_record_are_named_possibly_collapsed(tmp_path):
    frames = frames_from_records(_records(share=False))
    md = build_report(frames, tmp_path / "r", study="old", workers=1, formats=("png",)).read_text()
    flagged = _section(md, "Summary").split("**Flagged**")[1]
    assert "possibly collapsed: model fc, precision bnn: all 3 seeds give the same val_acc " \
           "0.2860 and test_acc 0.2553" in flagged
    # a study from before the record keeps its results.csv columns
    assert "collapsed" not in pd.read_csv(tmp_path / "r" / "results.csv").columns


# --- a tuned study ---------------------------------------------------------------------------

TUNED_SPEC = {"study": "tiny", "fixed": {"dataset": "digits", "epochs": 6},
              "grid": {"model": ["fc"], "precision": list(PRECISIONS), "seed": [0, 1]},
              "tune": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "trials": 4},
              "objective": {"metric": "val_acc", "direction": "maximize"}}


def _tuned_records():
    """Four tuner trials per cell (model, precision, seed), each with its own sampled lr: one
    at the cell's accuracy, three below it by 2-30 points."""
    rng = np.random.default_rng(3)
    base = synthetic_records(models=("fc",), precisions=PRECISIONS, seeds=(0, 1), failed=0,
                             augments=("none",), epochs=(6,))
    records = []
    for r in base:
        best = int(rng.integers(4))
        for t in range(4):
            rec = copy.deepcopy(r)
            drop = 0.0 if t == best else rng.uniform(0.02, 0.30)
            lr = float(np.exp(rng.uniform(np.log(1e-4), np.log(1e-2))))
            for d in (rec["result"], rec["config"]):
                d["lr"] = lr
            for key in ("val_acc", "test_acc", "best_val_acc"):
                rec["result"][key] -= drop
            n = len(records)
            rec.update(run_id=f"trial-{n}", trial=n, best=t == best,
                       cell=f"{r['cell']}/s{r['result']['seed']}")
            records.append(rec)
    return records


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    records = _tuned_records()
    frames = frames_from_records(records, spec=TUNED_SPEC)
    out = tmp_path_factory.mktemp("tuned") / "report"
    md = build_report(frames, out, study="tiny", workers=1, formats=("png",)).read_text()
    return records, frames, out, md


def test_a_tuned_study_compares_the_best_trial_of_each_cell(tuned):
    records, frames, out, md = tuned
    data = prepare(frames)
    best = {r["run_id"] for r in records if r["best"]}
    assert set(data.runs["run_id"]) == best and len(best) == len(PRECISIONS) * 2
    assert data.tuning is not None and data.tuning.params == ("lr",)
    assert (data.tuning.metric, data.tuning.trials, data.tuning.kept) == ("val_acc", 40, 10)
    # seeds, not tuner trials, are what a mean is over: n = 2 per configuration
    assert set(summary_table(data)["n"]) == {2}
    results = pd.read_csv(out / "results.csv").set_index("run_id")
    assert set(results.index[results["best_in_cell"]]) == best
    assert "**Tuned**" in _section(md, "Summary") and "highest `val_acc`" in md


def test_tuned_values_are_no_lr_stress_axis(tuned):
    _, frames, out, md = tuned
    data = prepare(frames)
    assert "lr" not in data.axes and not has_lr_variation(data)
    assert not (out / "tables" / "max_stable_lr.md").exists()
    assert not (out / "figures" / "lr_stability.png").exists()
    rows = {r.id: r for r in evaluate_claims(data, n_resamples=200)}
    assert rows["C3-lr"].verdict == rows["C4-lr"].verdict == NOT_TESTED
    assert pd.read_csv(out / "results.csv")["max_stable_lr"].isna().all()
    assert SPECS["C1"].id in _section(md, "Summary")
