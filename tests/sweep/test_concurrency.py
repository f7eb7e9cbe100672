"""Many `bitsweep sweep` commands started at the same instant on one fresh storage.

The README's recipe for many machines is "run the same command everywhere". Four real processes
(the "machines") run the real command line (suite.cli.main, what the `bitsweep` script calls),
released together by one multiprocessing.Barrier per round, each round on a storage nobody has
opened: a new PostgreSQL or MySQL (MariaDB) database (on the private servers of conftest.py), a
SQLite file or a journal file. The processes live for the whole module, so that each imports
torch and Lightning once.
Executions are counted from BITSWEEP_EXEC_LOG, which a worker appends one line to each time it
starts a trial's training: a trial run twice shows there even when only one of the runs finished.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import time
import traceback
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from suite.sweep.storage import open_storage

PROCESSES = 4
STORAGES = ("postgres", "mysql", "sqlite", "journal")
CREATE_ROUNDS = 8  # cheap rounds: create or join the study and queue it, no training
TRAIN_ROUNDS = 3   # per storage, 24 trainings each
SPEC = {
    "study": "together",
    "fixed": {"dataset": "digits", "epochs": 1, "batch_size": 256, "width": 0.25,
              "wandb_mode": "disabled"},
    "grid": {"model": ["fc"], "precision": ["fp32", 1, 2, "bnn"], "seed": [0, 1, 2, 3, 4, 5]},
}
CELLS = 24
DROP = {"postgres": 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)', "mysql": "DROP DATABASE IF EXISTS {}"}


@pytest.fixture
def fresh_storage(tmp_path: Path, request: pytest.FixtureRequest):
    """fresh_storage(kind, name) -> the URL or journal path of a storage nobody has opened."""
    made: list[tuple[str, str]] = []
    admin: dict[str, sqlalchemy.Engine] = {}

    def make(kind: str, name: str) -> str:
        if kind == "journal":
            return str(tmp_path / name / "optuna.journal")
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / name / 'optuna.db'}"
        if kind not in admin:
            server = sqlalchemy.engine.make_url(request.getfixturevalue(f"{kind}_url"))
            admin[kind] = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
        database = f"bitsweep_{os.getpid()}_{name}".replace("-", "_").lower()
        with admin[kind].connect() as conn:
            conn.execute(sqlalchemy.text(DROP[kind].format(database)))
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
        made.append((kind, database))
        return admin[kind].url.set(database=database).render_as_string(hide_password=False)

    yield make
    for kind, database in made:  # leave nothing on a shared server (BITSWEEP_TEST_*_URL)
        with admin[kind].connect() as conn:
            conn.execute(sqlalchemy.text(DROP[kind].format(database)))
    for engine in admin.values():
        engine.dispose()


def _sweeper(index: int, inbox, barrier, results, log: str) -> None:
    """One "machine": for each (argv, exec log) it is sent, wait at the barrier with the others,
    then run `bitsweep ARGV` in-process and report its exit status; None ends it. stdout and
    stderr go to ``log``, shown when a test fails."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update({"CI": "true", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"})
    from suite.cli import main

    while (job := inbox.get()) is not None:
        argv, exec_log = job
        os.environ["BITSWEEP_EXEC_LOG"] = exec_log
        barrier.wait(timeout=600)
        try:
            status: int | str = main(argv)
        except BaseException as err:  # noqa: BLE001 - the test reports whatever ended the command
            traceback.print_exc()
            status = f"raised {type(err).__name__}: {err}"
        sys.stdout.flush()
        sys.stderr.flush()
        results.put((index, status))
        gc.collect()  # close the round's database connections before the next round opens more


class Machines:
    """PROCESSES sweeper processes that live for the whole module, so that each imports torch
    and Lightning once; ``race`` releases them together, one round at a time."""

    def __init__(self, root: Path) -> None:
        ctx = mp.get_context("spawn")
        self.barrier, self.results = ctx.Barrier(PROCESSES), ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(PROCESSES)]
        self.logs = [root / f"process-{i}.log" for i in range(PROCESSES)]
        self.procs = [ctx.Process(target=_sweeper, args=(i, self.inboxes[i], self.barrier,
                                                         self.results, str(self.logs[i])))
                      for i in range(PROCESSES)]
        for p in self.procs:
            p.start()

    def race(self, argvs: list[list[str]], exec_logs: list[str]) -> None:
        """Each round's command in every process at once; every one must exit 0."""
        for number, (argv, exec_log) in enumerate(zip(argvs, exec_logs)):
            for inbox in self.inboxes:
                inbox.put((argv, exec_log))
            got = sorted(self._result() for _ in range(PROCESSES))
            assert got == [(i, 0) for i in range(PROCESSES)], f"round {number}: {got}\n{self.tails()}"

    def _result(self) -> tuple[int, int | str]:
        for _ in range(600):
            with contextlib.suppress(queue.Empty):
                return self.results.get(timeout=1)
            dead = [p.exitcode for p in self.procs if not p.is_alive()]
            assert not dead, f"a process ended ({dead}) mid-round:\n{self.tails()}"
        pytest.fail(f"no exit status within 10 min:\n{self.tails()}")

    def close(self) -> list[int | None]:
        for inbox in self.inboxes:
            inbox.put(None)
        for p in self.procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
        return [p.exitcode for p in self.procs]

    def tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in self.logs
                         if log.exists())


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory):
    started = Machines(tmp_path_factory.mktemp("machines"))
    yield started
    assert started.close() == [0] * PROCESSES, started.tails()


def _write_spec(tmp_path: Path) -> Path:
    path = tmp_path / "together.yaml"
    path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    return path


def _study(url: str, name: str = SPEC["study"]) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url, create=False))


@pytest.mark.parametrize("kind", STORAGES)
def test_processes_started_together_all_create_or_join_one_study(tmp_path, fresh_storage, machines,
                                                                  kind):
    spec = _write_spec(tmp_path)
    urls = [fresh_storage(kind, f"create-{kind}-{r}") for r in range(CREATE_ROUNDS)]
    argvs = [["sweep", str(spec), "--storage", url, "--runs", str(tmp_path / "runs"),
              "--workers", "1", "--n-trials", "0"] for url in urls]
    machines.race(argvs, [str(tmp_path / f"exec-{r}.log") for r in range(CREATE_ROUNDS)])
    for url in urls:
        storage = open_storage(url, create=False)
        assert optuna.get_all_study_names(storage) == [SPEC["study"]]
        study = _study(url)
        trials = study.get_trials(deepcopy=False)
        # Queued once per slot however many processes queued at once, and nothing ran.
        assert len(trials) == CELLS and {t.state for t in trials} == {TrialState.WAITING}
        assert len({t.user_attrs["slot"] for t in trials}) == CELLS
        assert study.metric_names == ["val_acc"]
    assert not any(Path(tmp_path).glob("exec-*.log"))


@pytest.mark.parametrize("kind", STORAGES)
def test_processes_started_together_run_every_cell_exactly_once(tmp_path, fresh_storage, machines,
                                                                 kind):
    spec = _write_spec(tmp_path)
    urls = [fresh_storage(kind, f"train-{kind}-{r}") for r in range(TRAIN_ROUNDS)]
    exec_logs = [str(tmp_path / f"exec-{r}.log") for r in range(TRAIN_ROUNDS)]
    argvs = [["sweep", str(spec), "--storage", url, "--runs", str(tmp_path / f"runs-{r}"),
              "--workers", "1", "--threads", "1"] for r, url in enumerate(urls)]
    machines.race(argvs, exec_logs)
    for url, exec_log in zip(urls, exec_logs):
        trials = _study(url).get_trials(deepcopy=False)
        assert len(trials) == CELLS, [(t.number, t.state.name) for t in trials]
        assert {t.state for t in trials} == {TrialState.COMPLETE}
        assert len({t.user_attrs["slot"] for t in trials}) == CELLS
        runs = [line.split("\t") for line in Path(exec_log).read_text().splitlines()]
        started = collections.Counter(slot for _, _, slot in runs)
        assert len(started) == CELLS and set(started.values()) == {1}, started.most_common(3)
        assert len({pid for pid, _, _ in runs}) > 1  # the processes really shared the queue


def test_a_worker_whose_trial_another_machine_ended_says_so_and_goes_on(tmp_path):
    """Another machine takes a running trial for lost (here: this test's own sync with grace 0,
    the code `bitsweep sweep --grace 0` runs) and fails it; the worker's next write to that trial
    is refused. The worker must log that and go on with
    the queue, not die with UpdateFinishedTrialError."""
    from suite.sweep.queue import queue_lock, sync_queue
    from suite.sweep.spec import load_spec

    raw = {"study": "ended", "fixed": {**SPEC["fixed"], "model": "cnn", "width": 1.0, "epochs": 8},
           "grid": {"precision": ["fp32", 1]}}
    spec_path = tmp_path / "ended.yaml"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    journal, exec_log = tmp_path / "runs" / "ended" / "optuna.journal", tmp_path / "exec.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("bitsweep")), "sweep", str(spec_path), "--runs",
         str(tmp_path / "runs"), "--workers", "1", "--threads", "1"],
        env={**os.environ, "CI": "true", "WANDB_MODE": "disabled", "BITSWEEP_EXEC_LOG": str(exec_log)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # polling a state to observe, not ordering a race
            running = [t for t in _study(str(journal), "ended").get_trials(deepcopy=False)
                       if t.state == TrialState.RUNNING] if journal.exists() else []
            # The objective is reported after every epoch: from the first on, the fit runs. (Not
            # the run dir's model.json: a run writes beside it and moves in when it ends.)
            if running and running[0].intermediate_values:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        else:
            pytest.fail("the sweep never had a trial in its fit")
        study = _study(str(journal), "ended")
        with queue_lock(str(journal)):
            state = sync_queue(study, load_spec(spec_path), retry_crashed=False, grace=0.0)
        assert state.lost == 1 and state.enqueued == 1
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "was ended by another worker while it ran" in err and "Traceback" not in err
    trials = _study(str(journal), "ended").get_trials(deepcopy=False)
    complete = collections.Counter(t.user_attrs["slot"] for t in trials if t.state == TrialState.COMPLETE)
    assert len(complete) == 2 and set(complete.values()) == {1}
    assert [t.user_attrs["failure"] for t in trials if t.state == TrialState.FAIL] == ["lost"]
    started = collections.Counter(line.split("\t")[2] for line in exec_log.read_text().splitlines())
    assert sorted(started.values()) == [1, 2]  # the ended trial's cell ran again, the other once
