"""MySQL (a real MariaDB server on 127.0.0.1, conftest.py) as a study's storage: a bare
``mysql://`` URL works with the mysql extra's driver, and a bad one is a clear error. Many
processes started together on one MySQL database: tests/sweep/test_concurrency.py."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from suite.cli import main
from suite.sweep.storage import open_storage, rdb_url


def test_a_bare_mysql_url_runs_a_sweep_through_pymysql(tmp_path, write_spec, mysql_url):
    bare = "mysql://" + mysql_url.split("://", 1)[1]
    assert rdb_url(bare) == mysql_url  # PyMySQL, not mysqlclient (not installed)
    spec = write_spec({"study": "my", "storage": bare,
                       "fixed": {"dataset": "digits", "epochs": 1, "batch_size": 256, "width": 0.25,
                                 "wandb_mode": "disabled"},
                       "grid": {"model": ["fc"], "precision": ["fp32", 1]}})
    assert main(["sweep", str(spec), "--runs", str(tmp_path / "runs"), "--workers", "1"]) == 0
    study = optuna.load_study(study_name="my", storage=open_storage(bare))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert {t.params["precision"] for t in study.trials} == {"fp32", "1"}


def test_a_bad_mysql_url_is_a_clear_error(tmp_path, write_spec, capsys):
    spec = write_spec({"study": "mybad", "storage": "mysql://nobody:secret@127.0.0.1:1/none",
                       "fixed": {"dataset": "digits"}, "grid": {"model": ["fc"]}})
    assert main(["sweep", str(spec), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "cannot be opened" in err and "secret" not in err
    assert not (tmp_path / "runs" / "mybad").exists()
