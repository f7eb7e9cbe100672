"""Queuing in batches (suite.sweep.queue.enqueue): the trials are those Optuna's own
``enqueue_trial`` makes, on every storage, and a large queue costs a few storage writes, not one
(with its fsync) per trial. Exactly-once under processes started together stays the concern of
test_concurrency.py, which runs the same code."""

from __future__ import annotations

import os

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from suite.sweep.queue import _BATCH, _rdb, claim, enqueue, queue_lock, sync_queue
from suite.sweep.spec import parse_spec
from suite.sweep.storage import open_storage
from suite.sweep.study import open_study

STORAGES = ("journal", "sqlite", "postgres", "mysql")
DROP = {"postgres": 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)', "mysql": "DROP DATABASE IF EXISTS {}"}


@pytest.fixture
def fresh(tmp_path, request):
    """fresh(kind, name) -> the URL or journal path of a storage nobody has opened."""
    made: list[tuple[sqlalchemy.Engine, str, str]] = []

    def make(kind: str, name: str) -> str:
        if kind == "journal":
            return str(tmp_path / name / "optuna.journal")
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / name / 'optuna.db'}"
        admin = sqlalchemy.create_engine(request.getfixturevalue(f"{kind}_url"),
                                         isolation_level="AUTOCOMMIT")
        database = f"bitsweep_batch_{os.getpid()}_{name}"
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(DROP[kind].format(database)))
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
        made.append((admin, kind, database))
        return admin.url.set(database=database).render_as_string(hide_password=False)

    yield make
    for admin, kind, database in made:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(DROP[kind].format(database)))
        admin.dispose()


def _attrs(i: int) -> dict:
    return {"cell": f"model=fc seed={i}", "slot": f"model=fc seed={i}#0|ab{i:04d}",
            "cell_index": i, "repeat": 0, "attempt": 1,
            "config": {"model": "fc", "seed": i, "lr": 0.01, "tags": ["a", "é"], "subset": None}}


def _as_stored(trial: optuna.trial.FrozenTrial) -> tuple:
    return (trial.number, trial.state, trial.user_attrs, trial.system_attrs, trial.params,
            trial.distributions, trial.value, trial.values, trial.datetime_start,
            trial.datetime_complete, trial.intermediate_values)


def _reread(url: str) -> list[optuna.trial.FrozenTrial]:
    """The study as another process sees it: a storage opened anew."""
    return optuna.load_study(study_name="q", storage=open_storage(url, create=False)).trials


@pytest.mark.parametrize("kind", STORAGES)
def test_a_batch_holds_the_trials_optunas_enqueue_makes(kind, fresh):
    """Trials queued one by one by Optuna and in batches (between Optuna's own, and across a
    batch boundary) read back the same, numbered in order, from a storage opened anew."""
    ours, optunas = fresh(kind, "ours"), fresh(kind, "optunas")
    studies = {url: optuna.create_study(study_name="q", storage=open_storage(url))
               for url in (ours, optunas)}
    for i in range(2):
        for study in studies.values():
            study.enqueue_trial({}, user_attrs=_attrs(i))
    with queue_lock(ours):
        enqueue(studies[ours], [_attrs(i) for i in range(2, 5)])
    for i in range(2, 5):
        studies[optunas].enqueue_trial({}, user_attrs=_attrs(i))
    for study in studies.values():
        study.enqueue_trial({}, user_attrs=_attrs(5))
    got, want = _reread(ours), _reread(optunas)
    assert [_as_stored(t) for t in got] == [_as_stored(t) for t in want]
    assert [t.user_attrs["cell_index"] for t in got] == list(range(6))
    taken = claim(studies[ours])  # the queue's first trial is claimed first, as before
    assert taken is not None and taken.number == 0


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_queue_larger_than_a_batch_is_numbered_once_in_order(kind, fresh):
    url = fresh(kind, "large")
    study = optuna.create_study(study_name="q", storage=open_storage(url))
    study.enqueue_trial({}, user_attrs=_attrs(0))
    n = _BATCH + 7
    with queue_lock(url):
        enqueue(study, [_attrs(i) for i in range(1, n + 1)])
    trials = _reread(url)
    assert [t.number for t in trials] == list(range(n + 1))
    assert [t.user_attrs["cell_index"] for t in trials] == list(range(n + 1))
    assert {t.state for t in trials} == {TrialState.WAITING}


def _grid(cells: int):
    return parse_spec({"study": "q", "fixed": {"dataset": "digits", "model": "fc",
                                               "wandb_mode": "disabled"},
                       "grid": {"seed": list(range(cells))}})


def test_sqlite_queues_a_large_grid_in_a_few_write_transactions(fresh):
    """Optuna commits each enqueued trial on its own (an fsync each: 10^4 cells took over 10
    minutes)."""
    url = fresh("sqlite", "commits")
    spec = _grid(_BATCH + 1)
    study = open_study(spec, url)
    engine = _rdb(study._storage).engine
    wrote, commits = [], []

    @sqlalchemy.event.listens_for(engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            wrote.append(statement)

    @sqlalchemy.event.listens_for(engine, "commit")
    def _committed(conn):
        if wrote:
            commits.append(len(wrote))
            wrote.clear()

    with queue_lock(url):
        state = sync_queue(study, spec, retry_crashed=True)
    assert state.enqueued == _BATCH + 1
    assert len(commits) == 2  # one per batch
    assert len(_reread(url)) == _BATCH + 1


def test_a_journal_queues_a_large_grid_in_a_few_appends(fresh, monkeypatch):
    """Each journal append is fsynced: Optuna's enqueue_trial pays one per trial."""
    url = fresh("journal", "appends")
    spec = _grid(_BATCH + 1)
    study = open_study(spec, url)
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd)))
    with queue_lock(url):
        state = sync_queue(study, spec, retry_crashed=True)
    monkeypatch.undo()
    assert state.enqueued == _BATCH + 1
    assert len(synced) == 2  # one per batch
    assert len(_reread(url)) == _BATCH + 1
