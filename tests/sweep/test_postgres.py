"""Many machines share one study through PostgreSQL: a real server on 127.0.0.1, no mocks."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from suite.sweep import run_sweep
from suite.sweep.spec import load_spec
from suite.sweep.storage import open_storage

ROOT = Path(__file__).parents[2]


def test_two_machines_join_one_postgres_study(tmp_path, write_spec, postgres_url):
    raw = {"study": "pg", "storage": postgres_url,
           "fixed": {"dataset": "digits", "epochs": 2, "batch_size": 256, "wandb_mode": "disabled"},
           "grid": {"model": ["cnn"], "precision": ["fp32", 1, 2.32, "bnn"], "seed": [0, 1]}}
    spec_path = write_spec(raw)
    # "Machine" two: another process with its own runs dir, started on the same spec.
    other = subprocess.Popen(
        [sys.executable, "-m", "suite", "sweep", str(spec_path), "--runs", str(tmp_path / "m2")],
        cwd=ROOT, env={**os.environ, "CI": "true"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    summary = run_sweep(load_spec(spec_path), runs_root=tmp_path / "m1")
    _, err = other.communicate(timeout=300)
    assert other.returncode == 0, err

    study = optuna.load_study(study_name="pg", storage=open_storage(postgres_url))
    done = collections.Counter(t.user_attrs["slot"] for t in study.trials
                               if t.state == TrialState.COMPLETE)
    assert len(done) == 8 and set(done.values()) == {1}
    assert len(study.trials) == 8
    assert summary["complete"] == 8  # the study's state, whichever machine ran what
    hosts_dirs = {Path(t.user_attrs["run_dir"]).parents[2].name for t in study.trials}
    assert hosts_dirs <= {"m1", "m2"}


def test_a_bad_postgres_url_is_a_clear_error(tmp_path, write_spec, capsys):
    from suite.cli import main

    spec = write_spec({"study": "pgbad", "storage": "postgresql://nobody:secret@127.0.0.1:1/none",
                       "fixed": {"dataset": "digits"}, "grid": {"model": ["fc"]}})
    assert main(["sweep", str(spec), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "cannot be opened" in err and "secret" not in err
