"""The queue of a study's grid cells (opening its storage is suite.sweep.storage).

Every (cell, repeat) of a sweep is a *slot*. The queue holds one Optuna trial per slot, enqueued as
a WAITING trial whose user attributes carry the cell and its RunConfig; workers claim waiting
trials with an atomic WAITING -> RUNNING step (``claim``), so a slot runs once however many workers
and machines share the study. Creating the study and enqueueing happen under a lock that spans
processes (a file lock for file and SQLite storage, an advisory lock on PostgreSQL, a named lock on
MySQL/MariaDB), so machines starting together neither race to create the tables nor enqueue a
slot twice.

A worker that dies leaves its trial RUNNING. Each running trial carries its host and pid and a
heartbeat (a trial system attribute refreshed every ``HEARTBEAT_SECONDS``); a trial whose process
is gone on this host, or whose heartbeat is older than the grace period, is failed as ``lost`` and
its slot enqueued again. The same mechanism serves every storage (Optuna's own heartbeats exist
for RDB storage only).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suite.sweep.slots import slot_identity, slot_key
from suite.sweep.storage import StorageError, describe, rdb_url, storage_file, unreachable

if TYPE_CHECKING:  # Optuna loads on first use: `bitsweep --help` reads GRACE_SECONDS from here
    import optuna

    from suite.run.config import RunConfig
    from suite.sweep.spec import SweepSpec

HEARTBEAT_SECONDS = 10.0
GRACE_SECONDS = 60.0  # a trial silent this long on another host is taken as lost
MAX_CRASHES = 2       # a slot whose run raised this many times is not retried again
MAX_LOST = 3          # a slot whose worker died this many times (e.g. killed for memory) neither
_HEARTBEAT_KEY = "bitsweep:heartbeat"


def storage_url(spec: SweepSpec, override: str | None, runs_root: Path) -> str:
    """``--storage`` wins over the spec's ``storage``; the default is a journal file in runs/."""
    return override or spec.default_storage(runs_root)


# Database servers' own cross-connection locks, held by one connection for the block: a
# PostgreSQL advisory lock (per database) and a MySQL/MariaDB named lock (per server, so the
# database's name is part of it). GET_LOCK answers 1 once it holds the lock, 0 on timeout; its
# "wait forever" timeout of -1 is MySQL's only (MariaDB 10.11 answers NULL and locks nothing), so
# it waits a day, and anything but 1 is an error rather than an unguarded edit.
@dataclass(frozen=True)
class _ServerLock:
    lock: str  # SQL taking the lock (waits for it)
    unlock: str
    key: object
    granted: object = None  # what ``lock`` answers once it holds the lock; None: not checked


def _server_lock(url: str) -> _ServerLock | None:
    """The named lock of a database server's URL; None for files and SQLite."""
    if url.startswith(("postgresql", "postgres:")):
        return _ServerLock("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)",
                           zlib.crc32(b"bitsweep-queue") & 0x7FFFFFFF)  # returns void
    if url.startswith("mysql"):
        from sqlalchemy.engine import make_url

        # GET_LOCK names are at most 64 characters
        return _ServerLock("SELECT GET_LOCK(:key, 86400)", "SELECT RELEASE_LOCK(:key)",
                           f"bitsweep-queue:{make_url(url).database}"[:64], granted=1)
    return None


@contextlib.contextmanager
def queue_lock(url: str) -> Iterator[None]:
    """Serialise queue edits (and the study's creation) across processes and machines sharing
    one storage."""
    server = _server_lock(url)
    if server is not None:
        import sqlalchemy

        try:  # the first contact with the server: say what is wrong as open_storage would
            engine = sqlalchemy.create_engine(rdb_url(url), poolclass=sqlalchemy.pool.NullPool)
            conn = engine.connect()
        except (ImportError, sqlalchemy.exc.SQLAlchemyError) as err:
            raise unreachable(url, err) from None
        with conn:
            got = conn.execute(sqlalchemy.text(server.lock), {"key": server.key}).scalar()
            if server.granted is not None and got != server.granted:
                raise RuntimeError(f"storage {describe(url)}: the queue lock {server.key!r} was "
                                   f"not granted ({got!r}) within a day; another sweep holds it")
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(server.unlock), {"key": server.key})
        engine.dispose()
        return
    target = storage_file(url)
    if target is None:
        yield  # other servers: the WAITING -> RUNNING claim is still atomic
        return
    if target.is_dir():  # refused before its lock file is made beside it: bad input leaves nothing
        raise StorageError(f"storage {describe(url)}: {target} is a directory; give a file in it, "
                           f"e.g. {target / 'optuna.db'}")
    lock_path = target.with_name(target.name + ".queue-lock")  # not ".lock": Optuna's journal uses it
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_lost(trial: optuna.trial.FrozenTrial, now: float, grace: float) -> bool:
    attrs = trial.user_attrs
    pid = attrs.get("pid")
    if attrs.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return True
    beat = trial.system_attrs.get(_HEARTBEAT_KEY)
    if beat is None:  # claimed but not yet started: judge by when it was claimed
        start = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - start > grace
    return now - float(beat) > grace


@dataclass
class QueueState:
    slots: int
    done: int
    pending: int
    enqueued: int
    failed_for_good: int
    lost: int


@dataclass(frozen=True)
class _Slot:
    """One (cell, repeat) of the spec, with the trials the study holds for it."""

    index: int
    config: RunConfig
    cell: str
    repeat: int
    key: str
    trials: list[optuna.trial.FrozenTrial]

    def outcome(self, *, retry_crashed: bool) -> str:
        """done | pending (waiting or running) | dead (not retried) | failed (retried when
        ``retry_crashed``) | lost (its worker died: retried) | new (never queued, or its only
        result is damaged: it fails its checksum)."""
        from optuna.trial import TrialState

        from suite.sweep.checksum import verify

        # a finished trial whose stored outcome fails its checksum is damage, not a result
        trials = [t for t in self.trials
                  if not (t.state == TrialState.COMPLETE and verify(t.user_attrs) is False)]
        states = {t.state for t in trials}
        if states & {TrialState.COMPLETE, TrialState.PRUNED}:
            return "done"
        if states & {TrialState.WAITING, TrialState.RUNNING}:
            return "pending"
        failures = [t.user_attrs.get("failure", "crash") for t in trials]
        crashes, losses = failures.count("crash"), failures.count("lost")
        if crashes >= MAX_CRASHES or losses >= MAX_LOST:
            return "dead"
        if crashes:
            return "failed" if retry_crashed else "dead"
        return "lost" if losses else "new"


def _slots(spec: SweepSpec, trials: list[optuna.trial.FrozenTrial]) -> Iterator[_Slot]:
    """Every slot of ``spec``, in the spec's order, with its trials among ``trials``."""
    by_slot: dict[str, list[optuna.trial.FrozenTrial]] = defaultdict(list)
    for t in trials:
        slot = t.user_attrs.get("slot")
        if slot and ("@" in slot or not spec.tune):  # a tuned trial's config is not its cell's
            by_slot[slot_identity(slot, t.user_attrs.get("config"))].append(t)
    for index, cell, repeat, key, identity in _slot_keys(spec):
        yield _Slot(index, spec.cells[index], cell, repeat, key, by_slot.get(identity, []))


# The last spec's slot keys, by identity (a spec is immutable): a worker syncs the queue each time
# it finds it empty, and a cell's fingerprint costs ~0.3 ms, seconds for a 10^4-cell grid.
_KEYS: list[tuple[SweepSpec, list[tuple[int, str, int, str, str]]]] = []


def _slot_keys(spec: SweepSpec) -> list[tuple[int, str, int, str, str]]:
    """(cell index, cell key, repeat, slot key, slot identity) of every slot of ``spec``."""
    if not _KEYS or _KEYS[0][0] is not spec:
        keys = []
        for index, config in enumerate(spec.cells):
            cell, fingerprint = spec.key(config), config.fingerprint()
            for repeat in range(spec.trials_per_cell):
                key = slot_key(cell, repeat, fingerprint)
                keys.append((index, cell, repeat, key, slot_identity(key)))
        _KEYS[:] = [(spec, keys)]
    return _KEYS[0][1]


def _fail_lost(study: optuna.Study, grace: float) -> tuple[list[optuna.trial.FrozenTrial], int]:
    """Fail every running trial whose worker is gone (``_is_lost``); returns the study's trials
    as they are then, and how many were lost. (One read of the trials: on a database Optuna
    reads every unfinished trial again on each call, all of a large queue.)"""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage  # noqa: SLF001 - Optuna exposes no public per-trial state setter
    now = time.time()
    trials = study.get_trials(deepcopy=False)
    lost = 0
    for i, t in enumerate(trials):
        if t.state != TrialState.RUNNING or not _is_lost(t, now, grace):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "error", "worker lost: its process died "  # noqa: SLF001
                                        f"or sent no heartbeat for {grace:.0f} s")
            storage.set_trial_user_attr(t._trial_id, "failure", "lost")  # noqa: SLF001
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # noqa: SLF001
            lost += 1
        except optuna.exceptions.UpdateFinishedTrialError:  # it ended since it was read
            pass
        trials[i] = storage.get_trial(t._trial_id)  # noqa: SLF001
    return trials, lost


def sync_queue(study: optuna.Study, spec: SweepSpec, *, retry_crashed: bool,
               grace: float = GRACE_SECONDS) -> QueueState:
    """Fail lost trials and enqueue every slot that has no finished, waiting or running trial.

    Call it under ``queue_lock``. ``retry_crashed``: also enqueue slots whose run raised (done
    when a sweep command starts, since the user may have fixed the cause; not while it runs).
    """
    trials, lost = _fail_lost(study, grace)
    done = pending = dead = 0
    waiting: list[dict[str, Any]] = []
    for slot in _slots(spec, trials):
        outcome = slot.outcome(retry_crashed=retry_crashed)
        if outcome == "done":
            done += 1
        elif outcome == "pending":
            pending += 1
        elif outcome == "dead":
            dead += 1
        else:
            waiting.append({"cell": slot.cell, "slot": slot.key, "cell_index": slot.index,
                            "repeat": slot.repeat, "attempt": len(slot.trials) + 1,
                            "config": slot.config.to_dict()})
    enqueue(study, waiting)
    return QueueState(len(spec.cells) * spec.trials_per_cell, done, pending + len(waiting),
                      len(waiting), dead, lost)


@dataclass(frozen=True)
class Undone:
    """The slots of a spec that have no finished trial, by why."""

    failed: int       # its last run raised; the same command runs it again
    failed_for_good: int  # raised MAX_CRASHES times (or its worker died MAX_LOST times): not retried
    unfinished: int   # never ran, or its worker died (still RUNNING, or failed as lost)

    @property
    def total(self) -> int:
        return self.failed + self.failed_for_good + self.unfinished


def undone(study: optuna.Study, spec: SweepSpec) -> Undone:
    """What is left of ``spec`` in ``study``: read only, for a sweep's closing summary."""
    trials = study.get_trials(deepcopy=False)
    outcomes = [slot.outcome(retry_crashed=True) for slot in _slots(spec, trials)]
    return Undone(outcomes.count("failed"), outcomes.count("dead"),
                  sum(outcomes.count(o) for o in ("pending", "lost", "new")))


_BATCH = 2000  # trials per storage write: one fsync, not one per trial; memory stays bounded


def enqueue(study: optuna.Study, user_attrs: list[dict[str, Any]]) -> None:
    """Add one WAITING trial per ``user_attrs`` item, as ``study.enqueue_trial({}, user_attrs=)``
    does, in that order, but written in batches: one append to a journal, one transaction on a
    database. Optuna writes each trial on its own, with an fsync (and on a database about a
    dozen statements) each: 10^4 cells took over 10 minutes on SQLite. Call it under
    ``queue_lock``, as every enqueuer of the sweep does."""
    from optuna.storages import JournalStorage

    storage = study._storage  # noqa: SLF001
    rdb = _rdb(storage)
    for start in range(0, len(user_attrs), _BATCH):
        batch = user_attrs[start:start + _BATCH]
        if rdb is not None:
            _insert_rows(rdb, study._study_id, batch)  # noqa: SLF001
        elif isinstance(storage, JournalStorage):
            _append_records(storage, study._study_id, batch)  # noqa: SLF001
        else:  # another storage: Optuna's own path
            for attrs in batch:
                study.enqueue_trial({}, user_attrs=attrs)


def _append_records(storage: optuna.storages.JournalStorage, study_id: int,
                    batch: list[dict[str, Any]]) -> None:
    """The CREATE_TRIAL records JournalStorage.create_new_trial writes for an enqueued trial,
    appended in one write (one lock, one fsync); every process replays them in file order."""
    from optuna.storages.journal._storage import JournalOperation
    from optuna.trial import TrialState

    with storage._thread_lock:  # noqa: SLF001
        worker = storage._replay_result.worker_id  # noqa: SLF001
        storage._backend.append_logs([  # noqa: SLF001
            {"op_code": JournalOperation.CREATE_TRIAL, "worker_id": worker, "study_id": study_id,
             "datetime_start": None, "state": TrialState.WAITING.value, "value": None,
             "values": None, "distributions": {}, "params": {}, "user_attrs": attrs,
             "system_attrs": {"fixed_params": {}}, "intermediate_values": {}}
            for attrs in batch])
        storage._sync_with_backend()  # noqa: SLF001


def _insert_rows(rdb: optuna.storages.RDBStorage, study_id: int,
                 batch: list[dict[str, Any]]) -> None:
    """The rows RDBStorage.create_new_trial inserts for an enqueued trial, in one transaction of
    a few multi-row statements (Optuna's ORM path takes about a dozen statements per trial).

    A trial is numbered as Optuna numbers it (the study's trials with a smaller id), with the
    study's row locked as Optuna locks it. The rows go in numbered -1, -2, ... so that each can
    be found again by its place in ``batch`` on every backend (MySQL has no INSERT ... RETURNING),
    then get their numbers in the same transaction."""
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState

    trials = models.TrialModel.__table__
    with _create_scoped_session(rdb.scoped_session) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        session.execute(trials.insert(), [
            {"study_id": study_id, "number": -1 - i, "state": TrialState.WAITING,
             "datetime_start": None, "datetime_complete": None} for i in range(len(batch))])
        ids = dict(session.execute(sqlalchemy.select(trials.c.number, trials.c.trial_id).where(
            trials.c.study_id == study_id, trials.c.number < 0)).all())
        first = min(ids.values())
        before = session.scalar(sqlalchemy.select(sqlalchemy.func.count()).select_from(trials)
                                .where(trials.c.study_id == study_id, trials.c.trial_id < first))
        session.execute(
            trials.update().where(trials.c.trial_id == sqlalchemy.bindparam("id"))
            .values(number=sqlalchemy.bindparam("n")),
            [{"id": trial_id, "n": before + rank}
             for rank, trial_id in enumerate(sorted(ids.values()))])
        session.execute(models.TrialUserAttributeModel.__table__.insert(), [
            {"trial_id": ids[-1 - i], "key": key, "value_json": json.dumps(value)}
            for i, attrs in enumerate(batch) for key, value in attrs.items()])
        session.execute(models.TrialSystemAttributeModel.__table__.insert(), [
            {"trial_id": ids[-1 - i], "key": "fixed_params", "value_json": "{}"}
            for i in range(len(batch))])


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Take one waiting trial, or None when the queue is empty. Never creates a trial: Study.ask
    would make an empty one when another worker wins the race for the last waiting trial."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage  # noqa: SLF001
    take = _take_row if _rdb(storage) is not None else _take_logged
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if take(storage, t._trial_id):  # noqa: SLF001
                return optuna.Trial(study, t._trial_id)  # noqa: SLF001
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    from optuna.storages import RDBStorage

    backend = getattr(storage, "_backend", storage)  # a study wraps an RDBStorage in a cache
    return backend if isinstance(backend, RDBStorage) else None


def _take_row(storage: optuna.storages.BaseStorage, trial_id: int) -> bool:
    """WAITING -> RUNNING as one conditional UPDATE; the row count says who won.

    Optuna's RDBStorage reads the state with SELECT ... FOR UPDATE and then writes it, which
    SQLite ignores (it has no row locks): two processes both read WAITING and both "win". One
    UPDATE ... WHERE state = 'WAITING' is decided by the database on every backend: SQLite runs it
    holding its single write lock on the latest committed state (the statement opens its own
    transaction, so there is no older snapshot to be stale), PostgreSQL re-checks the WHERE on the
    row after the competing update commits, and MySQL's InnoDB reads the row with a lock.
    """
    import datetime

    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    rdb = _rdb(storage)
    row = models.TrialModel
    update = (sqlalchemy.update(row)
              .where(row.trial_id == trial_id, row.state == TrialState.WAITING)
              .values(state=TrialState.RUNNING, datetime_start=datetime.datetime.now()))
    with rdb.engine.begin() as conn:  # naive local time above: what RDBStorage itself writes
        return conn.execute(update).rowcount == 1


def _take_logged(storage: optuna.storages.BaseStorage, trial_id: int) -> bool:
    """WAITING -> RUNNING through Optuna: atomic on a journal, whose appends are serialised by its
    file lock and which every process replays in the one file order; the first RUNNING record of
    a trial wins there, and Optuna answers True only to the worker whose record it was."""
    from optuna.trial import TrialState

    return storage.set_trial_state_values(trial_id, TrialState.RUNNING)


class Heartbeat:
    """Marks a running trial alive from a background thread until stopped."""

    def __init__(self, trial: optuna.Trial, every: float = HEARTBEAT_SECONDS) -> None:
        self._storage, self._id = trial.storage, trial._trial_id  # noqa: SLF001
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bitsweep-heartbeat", daemon=True)

    def _beat(self) -> None:
        with contextlib.suppress(Exception):  # a finished trial or a storage hiccup: next beat
            self._storage.set_trial_system_attr(self._id, _HEARTBEAT_KEY, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._beat()

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def worst_value(direction: str) -> float:
    """The objective value of a run that gave none (diverged): worse than any real value."""
    return -math.inf if direction == "maximize" else math.inf
