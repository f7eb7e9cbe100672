"""Studies with missing pieces still build, and report.md says what could not be computed."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import optuna
import pandas as pd
import pytest

from suite.report import build_report, load_study
from suite.report.frame import frames_from_records
from suite.report.synthetic import add_to_study, synthetic_records


def _journal_study(path, records):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="thin", storage=storage, direction="maximize")
    add_to_study(study, records)
    return study


@pytest.fixture(scope="module")
def thin(tmp_path_factory: pytest.TempPathFactory):
    """No fp32 runs, one seed, one width, one epoch budget, no augmentation variation, one
    diverged run, one failed trial, one pruned trial with partial curves, no packed sizes."""
    root = tmp_path_factory.mktemp("thin")
    records = synthetic_records(models=("cnn",), precisions=("bnn", "1", "1.58", "2", "2.32"),
                                seeds=(0,), augments=("none",), failed=1, rng_seed=3)
    done = [r for r in records if r["state"] == "COMPLETE"]
    victim = done[1]
    victim["result"].update(diverged=True, diverged_epoch=4, test_acc=float("nan"),
                            val_acc=float("nan"))
    for row in victim["curves"][3:]:
        row.update(val_acc=float("nan"), val_loss=float("nan"), train_loss=float("nan"))
    for r in done:
        r["result"].pop("packed_bytes", None)
    records.append({"run_id": "x", "state": "PRUNED", "config": dict(done[0]["config"], seed=9),
                    "curves": done[0]["curves"][:2]})
    log = root / "journal.log"
    _journal_study(log, records)
    frames = load_study("thin", str(log))  # a JournalStorage file given by path
    out = root / "report"
    # One worker: this study covers the in-process drawing path (the full study the forked one).
    report = build_report(frames, out, study="thin", command="bitsweep report sweeps/thin.yaml",
                          workers=1)
    return frames, out, report


def test_frames_keep_every_trial(thin):
    frames, _, _ = thin
    status = frames.results["status"].value_counts().to_dict()
    assert status == {"ok": 4, "diverged": 1, "failed": 1, "pruned": 1}
    pruned = frames.results[frames.results["status"] == "pruned"]["run_id"].iloc[0]
    assert (frames.curves["run_id"] == pruned).sum() == 2  # partial curves kept in curves.csv
    ok = frames.results[frames.results["status"] == "ok"]
    assert (ok["stored_bytes"] == ok["quantized_bytes"]).all()  # no packed size: bit-count size


def test_report_builds_and_says_what_is_missing(thin):
    _, out, report = thin
    md = report.read_text()
    section = md.split("## Could not compute")[1].split("## Claims")[0]
    for expected in (
        "gap_heatmap: not drawn, no fp32 runs",
        "epochs_to_fp32: not drawn, no fp32 runs",
        "one seed per configuration",
        "single augmentation setting",
        "no fp32 runs",
        "no 32-bit reference line",
    ):
        assert expected in section, expected
    # claims the study cannot test are said so in the summary, not among what failed to compute
    assert "claim C1" not in section
    summary = md.split("## Summary")[1].split("## Provenance")[0]
    untested = next(x for x in summary.splitlines() if "not tested by this study's design" in x)
    for expected in ("C1", "C5", "no fp32 runs", "C3", "no augmentation variation", "C2"):
        assert expected in untested, expected
    assert "ERROR" not in md
    assert "## Runs that did not finish" in md and "pruned" in md


def test_no_empty_or_blank_figure_files(thin):
    import matplotlib.pyplot as plt

    assert not plt.get_fignums()  # figures never pass through pyplot's registry
    _, out, _ = thin
    files = list((out / "figures").iterdir())
    assert files, "figures that can be drawn from thin data should still be drawn"
    names = {p.stem for p in files}
    assert "gap_heatmap" not in names and "epochs_to_fp32" not in names
    assert {"accuracy_vs_bits", "learning_curves", "stability"} <= names
    for p in files:
        assert p.stat().st_size > 1000, p
        if p.suffix == ".png":
            assert mpimg.imread(p)[..., :3].std() > 0.05, p


def test_claims_are_inconclusive_with_reasons(thin):
    _, out, _ = thin
    claims = pd.read_csv(out / "tables" / "claims.csv").set_index("id")
    # no fp32 run at all: C1 cannot be tested; two runs a side are too few to decide C4
    assert claims["verdict"].isin(["inconclusive", "not tested"]).all()
    assert claims.loc["C1", ["verdict", "reason"]].tolist() == ["not tested", "no fp32 runs"]
    assert claims.loc["C4", "verdict"] == "inconclusive"
    assert claims.loc["C4", "reason"].startswith("fewer than 2 runs per side")
    assert all(isinstance(r, str) and r for r in claims["reason"])
    assert all(math.isnan(v) for v in claims["estimate"])


def test_only_failed_trials_and_stale_files(tmp_path):
    records = [{"run_id": f"t{i}", "trial": i, "state": "FAIL", "error": "boom",
                "config": {"model": "fc", "precision": "2", "seed": i}} for i in range(2)]
    frames = frames_from_records(records)
    out = tmp_path / "r"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "old.png").write_bytes(b"stale")
    report = build_report(frames, out, study="empty", workers=1)
    md = report.read_text()
    assert "No figure could be drawn" in md
    assert "no completed run" in md
    assert not (out / "figures" / "old.png").exists()
    assert list((out / "figures").iterdir()) == []
    results = pd.read_csv(out / "results.csv")
    assert list(results["error"]) == ["boom", "boom"]
    assert pd.read_csv(out / "tables" / "claims.csv")["verdict"].eq("not tested").all()
