"""Tidy frames: labels, columns, loaders, grouping axes, tables."""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
import pytest

from suite.report import CURVE_COLUMNS, RESULT_COLUMNS, load_run_dirs, load_study
from suite.report.frame import (
    bit_budget,
    frames_from_records,
    grid_kind,
    normalize_precision,
    order_precisions,
    precision_bits,
    setting_axes,
)
from suite.report.tables import latex_escape, to_latex, to_markdown
from suite.sweep.storage import describe


@pytest.mark.parametrize(
    ("value", "label"),
    [(2.32, "2.32"), ("2.32", "2.32"), (1, "1"), ("4.08", "4.09"), ("N=5", "2.32"),
     ("levels=7", "N=7"), ("FP32", "fp32"), ("bnn", "bnn"), (32, "fp32"), (None, None)],
)
def test_normalize_precision(value, label):
    assert normalize_precision(value) == label


def test_order_and_bits():
    assert order_precisions(["fp32", "4", "bnn", "1", "N=7", "2.32", "2.32"]) == [
        "bnn", "1", "2.32", "N=7", "4", "fp32"]
    assert precision_bits("2.32") == pytest.approx(math.log2(5))
    assert precision_bits("bnn") == 1 and precision_bits("fp32") == 32
    assert [grid_kind(x) for x in ("1", "1.58", "bnn", "fp32", "N=7")] == [
        "no zero", "zero", "bnn", "fp32", "zero"]
    assert [bit_budget(x) for x in ("1", "1.58", "3.17", "4", "N=7", "bnn")] == [
        1, 1, 3, 4, None, None]


def test_columns_and_derived_values():
    frames = frames_from_records([
        {"run_id": "a", "state": "COMPLETE",
         "result": {"model": "fc", "precision": "2.32", "seed": 0, "test_acc": 0.5,
                    "quantized_bytes": 100, "packed_bytes": 90, "diverged": False,
                    "zero": False},  # a wrong `zero` is corrected from the label
         "curves": [{"epoch": 1, "val_acc": 0.4, "lr": 0.1}, {"epoch": 2, "val_acc": 0.5}]},
        {"run_id": "b", "state": "COMPLETE",
         "result": {"model": "fc", "precision": "fp32", "seed": 0, "test_acc": 0.6,
                    "fp32_bytes": 400, "diverged": True}},
    ])
    r = frames.results.set_index("run_id")
    assert list(frames.results.columns) == list(RESULT_COLUMNS)
    assert list(frames.curves.columns) == list(CURVE_COLUMNS)
    assert r.loc["a", "zero"] and r.loc["a", "levels"] == 5 and r.loc["a", "k"] == 2
    assert r.loc["a", "stored_bytes"] == 90 and r.loc["b", "stored_bytes"] == 400
    assert r.loc["b", "status"] == "diverged" and r.loc["b", "bits"] == 32
    assert r.loc["a", "augment"] == "none" and r.loc["a", "task"] == "image"
    assert frames.curves["lr_epoch"].tolist()[0] == 0.1  # per-epoch lr renamed
    assert set(frames.curves["model"]) == {"fc"}


def test_setting_axes_skip_bookkeeping_fields():
    records = []
    for i, (opt, seed) in enumerate([("adam", 0), ("adam", 1), ("sgd", 0), ("sgd", 1)] * 2):
        config = {"model": "fc", "precision": "2" if i < 4 else "fp32", "seed": seed,
                  "optimizer": opt, "run_dir": f"runs/{i}", "data_seed": seed,
                  "threads": seed, "hidden_dim": 64 * (1 + seed), "dropout": 0.1 * seed}
        records.append({"run_id": str(i), "state": "COMPLETE", "config": config,
                        "result": {"test_acc": 0.5}})
    axes = setting_axes(frames_from_records(records))
    assert {"optimizer", "hidden_dim", "dropout"} <= set(axes)
    assert "threads" not in axes
    assert "run_dir" not in axes and "data_seed" not in axes and "seed" not in axes


def test_load_study_sqlite_fail_without_config(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    trial = study.ask({"precision": optuna.distributions.CategoricalDistribution(["2", "fp32"])})
    trial.set_user_attr("error", "ValueError: bad\nTraceback ...")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    frames = load_study("s", url)
    row = frames.results.iloc[0]
    assert row["status"] == "failed" and row["precision"] in ("2", "fp32")
    assert row["error"].startswith("ValueError: bad")
    assert frames.spec is None and frames.curves.empty
    with pytest.raises(FileNotFoundError):
        load_study("s", str(tmp_path / "missing.log"))


def test_redact_password():
    assert describe("postgresql+psycopg2://u:secret@127.0.0.1:5432/db") == \
        "postgresql+psycopg2://u:***@127.0.0.1:5432/db"


def test_load_run_dirs(tmp_path):
    for i, p in enumerate(("fp32", "2")):
        d = tmp_path / "runs" / f"run{i}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(
            {"model": "cnn", "precision": p, "seed": 0, "test_acc": 0.7, "diverged": False}))
        pd.DataFrame({"epoch": [1, 2], "val_acc": [0.5, 0.7], "lr": [0.1, 0.05]}).to_csv(
            d / "curves.csv", index=False)
    frames = load_run_dirs([tmp_path / "runs"])
    assert sorted(frames.results["run_id"]) == ["run0", "run1"]
    assert len(frames.curves) == 4 and frames.curves["precision"].notna().all()
    again = load_run_dirs([tmp_path / "runs" / "run0"])
    assert list(again.results["run_id"]) == ["run0"]
    other = tmp_path / "other" / "run0"
    other.mkdir(parents=True)
    (other / "result.json").write_text(json.dumps({"model": "cnn", "precision": "2"}))
    both = load_run_dirs([tmp_path / "runs", tmp_path / "other"])
    assert sorted(both.results["run_id"]) == ["other/run0", "runs/run0", "runs/run1"]


def test_latex_and_markdown_writers():
    df = pd.DataFrame({"name": ["a_b & c", "50%"], "value": ["1.5 ± 0.2", "≤ 2"]})
    tex = to_latex(df, "Caption with 2^k", "tab:x")
    assert r"a\_b \& c" in tex and r"50\%" in tex and r"$\pm$" in tex and r"$\leq$" in tex
    assert r"$2^{k}$" in tex  # a power, not a caret
    assert r"$-$0.16 [$-$2.2" in to_latex(pd.DataFrame({"x": ["-0.16 [-2.2, +1]"]}), "c", "t")
    assert "run-3" in to_latex(pd.DataFrame({"x": ["run-3"]}), "c", "t")  # hyphens stay
    assert tex.count("\\toprule") == tex.count("\\bottomrule") == 1
    assert latex_escape("{x}") == r"\{x\}"
    md = to_markdown(pd.DataFrame({"a": ["x|y"], "n": [3]}))
    assert md.splitlines() == ["| a | n |", "| --- | ---: |", "| x\\|y | 3 |"]


def test_retried_attempts_and_queue_attrs():
    """The sweep driver retries a crashed slot: the failed attempt is history ("retried"), a
    slot that never finished stays "failed", and waiting trials are counted, not listed."""
    cfg = {"model": "fc", "precision": "2", "seed": 0}
    records = [
        {"run_id": "t0", "trial": 0, "state": "FAIL", "error": "boom", "config": cfg,
         "slot": "a#0@aaaa", "attempt": 1, "failure": "crash"},
        {"run_id": "t1", "trial": 1, "state": "COMPLETE", "config": cfg, "slot": "a#0@aaaa",
         "attempt": 2, "result": {**cfg, "test_acc": 0.5}},
        {"run_id": "t2", "trial": 2, "state": "FAIL", "error": "worker lost", "config": cfg,
         "slot": "b#0@bbbb", "attempt": 1, "failure": "lost"},
        {"run_id": "t3", "trial": 3, "state": "WAITING", "config": cfg, "slot": "c#0@cccc"},
    ]
    r = frames_from_records(records).results.set_index("run_id")
    assert r["status"].to_dict() == {"t0": "retried", "t1": "ok", "t2": "failed",
                                     "t3": "waiting"}
    assert r.loc["t0", "attempt"] == 1 and r.loc["t2", "failure"] == "lost"
    from suite.report.stats import prepare
    from suite.report.tables import failed_table

    table = failed_table(prepare(frames_from_records(records)))
    assert list(table["status"]) == ["retried", "failed"]  # waiting ones only counted


def test_a_slot_queued_before_fingerprints_is_retried_under_its_new_key():
    """A study begun by an older version keyed slots without the config fingerprint; a worker
    lost there and finished by the new version is the same slot, so it reads as retried."""
    from suite.run.config import RunConfig

    cfg = RunConfig.from_dict({"model": "vit", "precision": "fp32", "seed": 1}).to_dict()
    other = {**cfg, "epochs": cfg["epochs"] + 1}  # a changed fixed value: a different slot
    fp = RunConfig.from_dict(cfg).fingerprint()
    records = [
        {"run_id": "old", "trial": 0, "state": "FAIL", "error": "worker lost", "config": cfg,
         "slot": "v#0", "failure": "lost"},
        {"run_id": "new", "trial": 1, "state": "COMPLETE", "config": cfg, "slot": f"v#0@{fp}",
         "result": {"test_acc": 0.8}},
        {"run_id": "stale", "trial": 2, "state": "FAIL", "error": "worker lost", "config": other,
         "slot": "v#0", "failure": "lost"},
    ]
    r = frames_from_records(records).results.set_index("run_id")
    assert r["status"].to_dict() == {"old": "retried", "new": "ok", "stale": "failed"}
    assert r.loc["old", "slot"] == "v#0"  # as stored


def test_headline_slice_keeps_the_full_resolution_grid():
    """The default study's shape: every resolution at width 1, a width sweep (0.25, 2.5) at
    four resolutions. The headline setting is width 1, not the largest width."""
    from suite.report.stats import headline_slice, prepare

    full = ("fp32", "bnn", "1", "1.58", "2", "2.32", "3", "3.17", "4", "4.09")
    records = []
    for width, precisions in ((1.0, full), (0.25, ("fp32", "1", "2.32", "bnn")),
                              (2.5, ("fp32", "1", "2.32", "bnn"))):
        for p in precisions:
            for seed in (0, 1):
                records.append({"run_id": f"{width}-{p}-{seed}", "state": "COMPLETE",
                                "config": {"model": "fc", "width": width, "precision": p,
                                           "seed": seed, "epochs": 4},
                                "result": {"test_acc": 0.5}})
    data = prepare(frames_from_records(records))
    assert "width" in data.axes
    df, fixed = headline_slice(data.runs, data.axes)
    assert set(df["width"]) == {1.0} and df["precision"].nunique() == len(full)
    assert fixed == ["width = 1"]
