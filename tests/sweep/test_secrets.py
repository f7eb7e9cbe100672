"""No file the suite writes holds a database password: run dirs, offline W&B runs (trials' and
the report's), the report, what the commands print, and the study's attributes in its storage.

Real servers (conftest.py) with a password-protected user; the sweep and the report run as the
``bitsweep`` command does, in their own processes, so W&B sees their real command lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from suite.sweep.queue import queue_lock
from suite.sweep.storage import StorageError, describe, open_storage, redact

ROOT = Path(__file__).parents[2]
PASSWORD = "Sw0rdfish7f3c9e1b"  # plain characters: a percent-encoded copy would hide from grep
USER = "bitsweep_secret"
DATABASE = "bitsweep_secrets"


def _admin(url: str, *statements: str, database: str | None = None) -> list:
    """Run statements as the server's admin user; the last one's rows."""
    engine = sqlalchemy.create_engine(
        url if database is None else sqlalchemy.engine.make_url(url).set(database=database),
        poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT")
    rows: list = []
    with engine.connect() as conn:
        for sql in statements:
            result = conn.execute(sqlalchemy.text(sql))
            rows = list(result) if result.returns_rows else []
    engine.dispose()
    return rows


@pytest.fixture(scope="module")
def pg_secret(postgres_url: str) -> sqlalchemy.engine.URL:
    """A PostgreSQL role that must give PASSWORD (the private server trusts everyone else) and a
    database of its own; the role's URL without the password."""
    _admin(postgres_url, f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'",
           f"CREATE DATABASE {DATABASE} OWNER {USER}")
    hba = Path(_admin(postgres_url, "SHOW hba_file")[0][0])
    if hba.is_file():  # the private server (an existing one, BITSWEEP_TEST_POSTGRES_URL: its own)
        # pg_hba.conf takes the first line that matches: this one before the server's "trust"
        hba.write_text(f"host all {USER} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        _admin(postgres_url, "SELECT pg_reload_conf()")
    url = sqlalchemy.engine.make_url(postgres_url).set(username=USER, database=DATABASE)
    _refused_without_password(url)
    return url


@pytest.fixture(scope="module")
def mysql_secret(mysql_url: str) -> sqlalchemy.engine.URL:
    """A MariaDB user that must give PASSWORD, with a database of its own; its URL without it."""
    _admin(mysql_url, f"CREATE DATABASE {DATABASE}",
           f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'",
           f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'127.0.0.1'")
    url = sqlalchemy.engine.make_url(mysql_url).set(username=USER, database=DATABASE)
    _refused_without_password(url)
    return url


def _refused_without_password(url: sqlalchemy.engine.URL) -> None:
    # what the environment and password-file tests below rely on: no password, no access
    env = {k: os.environ.pop(k) for k in ("PGPASSWORD", "PGPASSFILE", "MYSQL_PWD")
           if k in os.environ}
    try:
        with pytest.raises(StorageError):
            open_storage(url.render_as_string(hide_password=False))
    finally:
        os.environ.update(env)


def _with_password(url: sqlalchemy.engine.URL) -> str:
    return url.set(password=PASSWORD).render_as_string(hide_password=False)


def _bitsweep(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``python -m suite ARGS`` (its own process, its own sys.argv); its stdout and stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "suite", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, "CI": "true", "WANDB_MODE": "offline",
                          "WANDB_SILENT": "true", **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _tiny_spec(study: str, storage: str) -> dict:
    return {"study": study, "storage": storage,
            "fixed": {"dataset": "digits", "epochs": 1, "batch_size": 256, "width": 0.25,
                      "wandb_mode": "offline"},
            "grid": {"model": ["fc"], "precision": ["fp32", 1]}}


def _files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in sorted(root.rglob("*"))
            if p.is_file() and secret.encode() in p.read_bytes()]


def _stored_attrs(storage: str, study: str) -> str:
    """Every attribute the study keeps in its storage (the study's and each trial's), as text."""
    opened = open_storage(storage, create=False)
    study_id = opened.get_study_id_from_name(study)
    return json.dumps([opened.get_study_user_attrs(study_id), opened.get_study_system_attrs(study_id),
                       [[t.user_attrs, t.system_attrs] for t in opened.get_all_trials(study_id)]],
                      default=str)


@pytest.mark.parametrize(("kind", "workers"), [
    ("postgres", 1), ("postgres", 2), ("mysql", 1), ("mysql", 2), ("journal", 1), ("sqlite", 2)])
def test_no_written_file_holds_the_storage_password(kind, workers, request, tmp_path, write_spec):
    """The password in the sweep file's storage: field and on the command line (--storage);
    journal and SQLite studies swept with --storage from a sweep file that names a team's
    database (its password in the study's spec) must not keep it either."""
    runs, out = tmp_path / "runs", tmp_path / "reports"
    study = f"secret-{kind}-{workers}"
    if kind in ("postgres", "mysql"):
        storage = _with_password(request.getfixturevalue(f"{'pg' if kind == 'postgres' else kind}"
                                                         "_secret"))
        in_file = storage
    else:
        storage = (str(runs / study / "optuna.journal") if kind == "journal"
                   else f"sqlite:///{runs / study / 'optuna.db'}")
        in_file = f"postgresql://team:{PASSWORD}@127.0.0.1:5432/shared"
    spec = write_spec(_tiny_spec(study, in_file))  # tmp_path/spec.yaml: not searched below

    printed = _bitsweep("sweep", str(spec), "--storage", storage, "--runs", str(runs),
                        "--workers", str(workers))
    printed += _bitsweep("report", str(spec), "--storage", storage, "--runs", str(runs),
                         "--out", str(out), "--wandb")

    trial_runs = list((runs / study).rglob("offline-run-*/run-*.wandb"))
    assert len(trial_runs) == 3  # two trials and the report: W&B did record them
    leaks = _files_holding(runs, PASSWORD) + _files_holding(out, PASSWORD)
    leaks += ["the commands' output"] * (PASSWORD in printed)
    leaks += ["the study's attrs in its storage"] * (PASSWORD in _stored_attrs(storage, study))
    assert leaks == [], "\n".join(leaks)
    # what was recorded is still there, the password hidden: the command line W&B keeps
    if kind in ("postgres", "mysql"):
        assert all(describe(storage).encode() in p.read_bytes() for p in trial_runs)
    assert redact(in_file) in (out / study / "report.md").read_text()


def test_postgres_takes_the_password_from_pgpassword(pg_secret, monkeypatch):
    url = pg_secret.render_as_string(hide_password=False)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    optuna.create_study(study_name="pgpassword", storage=open_storage(url))
    with queue_lock(url):  # the queue's own connection too
        pass


def test_postgres_takes_the_password_from_a_pgpass_file(pg_secret, monkeypatch, tmp_path):
    url = pg_secret.render_as_string(hide_password=False)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{pg_secret.host}:{pg_secret.port}:{DATABASE}:{USER}:{PASSWORD}\n")
    pgpass.chmod(0o600)  # libpq ignores a password file others can read
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    optuna.create_study(study_name="pgpass", storage=open_storage(url))
    with queue_lock(url):
        pass


def test_mysql_takes_the_password_from_mysql_pwd(mysql_secret, monkeypatch):
    url = mysql_secret.render_as_string(hide_password=False)
    monkeypatch.setenv("MYSQL_PWD", PASSWORD)
    optuna.create_study(study_name="mysqlpwd", storage=open_storage(url))
    with queue_lock(url):
        pass


def test_mysql_takes_the_password_from_an_option_file(mysql_secret, monkeypatch, tmp_path):
    cnf = tmp_path / "my.cnf"
    cnf.write_text(f"[client]\npassword={PASSWORD}\n")
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    url = mysql_secret.update_query_dict({"read_default_file": str(cnf)}).render_as_string(
        hide_password=False)
    optuna.create_study(study_name="mycnf", storage=open_storage(url))
    with queue_lock(url):
        pass


def test_redact_hides_every_form_of_a_password():
    assert redact("postgresql+psycopg2://u:pw@127.0.0.1:5432/db") == \
        "postgresql+psycopg2://u:***@127.0.0.1:5432/db"
    assert redact("postgresql://postgres@127.0.0.1:5432/db") == \
        "postgresql://postgres@127.0.0.1:5432/db"  # no password: nothing to hide
    assert redact("--storage=mysql://u:p@ss@h/db") == "--storage=mysql://u:***@h/db"
    assert redact("postgresql://u@h/db?sslmode=require&password=pw") == \
        "postgresql://u@h/db?sslmode=require&password=***"
    text = 'storage: "postgresql://u:pw@h/db"\nother: mysql://a:pw@c/d  # a comment\n'
    assert redact(text) == 'storage: "postgresql://u:***@h/db"\nother: mysql://a:***@c/d  # a comment\n'
    assert redact("runs/x/optuna.journal") == "runs/x/optuna.journal"
    assert redact("sqlite:///runs/x/optuna.db") == "sqlite:///runs/x/optuna.db"
