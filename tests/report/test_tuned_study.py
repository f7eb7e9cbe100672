"""The README's `tiny` example end to end, made smaller: a real sweep with `tune:` (the tuner's
trials in each cell), then `bitsweep report` on it. The report compares the best trial of each
cell by the objective and never takes the tuner's learning rates for seeds or an lr grid."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from suite.cli import main
from suite.report.claims import NOT_TESTED
from suite.sweep import run_sweep
from suite.sweep.spec import load_spec

pytestmark = pytest.mark.slow

SPEC = """\
study: tiny
fixed: {dataset: digits, epochs: 2, subset: 30, threads: 1}
grid:
  model: [fc]
  precision: [fp32, 2.32]
  seed: [0, 1]
tune:
  lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  trials: 3
objective: {metric: val_acc, direction: maximize}
wandb: {mode: disabled}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.yaml").write_text(SPEC)
    run_sweep(load_spec(root / "tiny.yaml"), workers=1, runs_root=root / "runs", threads=1)
    code = main(["report", str(root / "tiny.yaml"), "--runs", str(root / "runs"), "--out",
                 str(root / "reports"), "--formats", "png"])
    assert code == 0
    return root / "reports" / "tiny"


def test_each_cell_is_its_best_trial_by_the_objective(tiny):
    results = pd.read_csv(tiny / "results.csv")
    done = results[results["status"].isin(["ok", "diverged"])]
    assert len(done) == 2 * 2 * 3 and done["lr"].nunique() == len(done)  # sampled, not a grid
    best = done.sort_values(["val_acc", "trial"], ascending=[False, True]).drop_duplicates(
        ["precision", "seed"])
    assert set(done.loc[done["best_in_cell"], "run_id"]) == set(best["run_id"])
    summary = (tiny / "tables" / "summary.md").read_text().splitlines()[2:]
    assert len(summary) == 2 and all("| 2 |" in row for row in summary)  # n = 2 seeds, not 6
    md = (tiny / "report.md").read_text()
    assert "**Tuned**: `lr` sampled by the tuner" in md
    assert "highest `val_acc`" in md and "4 of 12 completed trials" in md


def test_tuned_learning_rates_are_no_lr_stress(tiny):
    assert not (tiny / "tables" / "max_stable_lr.md").exists()
    assert not (tiny / "figures" / "lr_stability.png").exists()
    assert pd.read_csv(tiny / "results.csv")["max_stable_lr"].isna().all()
    claims = pd.read_csv(tiny / "tables" / "claims.csv").set_index("id")
    assert claims.loc["C3-lr", "verdict"] == claims.loc["C4-lr", "verdict"] == NOT_TESTED
