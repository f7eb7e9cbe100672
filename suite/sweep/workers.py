"""Worker processes: each claims trials one after another until the queue is empty. A worker is the
sweep's own process when ``workers == 1``, else that many spawned processes; each imports torch and
Lightning once and trains many runs. Ctrl-C and SIGTERM are caught here, whether a terminal sent
them to every process or a job scheduler to the sweep's own alone (it passes them on): the trial at
hand is recorded as interrupted and nothing new is claimed. ``cap_workers`` fits the number of
workers to the machine."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from suite.sweep.progress import Progress
from suite.sweep.queue import claim, queue_lock, sync_queue
from suite.sweep.spec import SweepSpec
from suite.sweep.study import _quiet_optuna, open_study
from suite.sweep.trial import record_interrupted, run_trial

_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker needs; plain data so it pickles into a spawned process."""

    spec: SweepSpec
    url: str
    runs_root: str
    threads: int | None
    limit: int | None  # trials this machine may still start (None: no limit)
    grace: float
    index: int = 0
    wandb_offline: bool = False  # online W&B was found unreachable once, for the whole sweep


# Set by Ctrl-C or SIGTERM. Python raises KeyboardInterrupt at the next bytecode, but one that
# lands inside a finaliser, a weakref callback or a library's blanket except is swallowed; the flag
# still stops the sweep after the trial at hand instead of letting it run the whole queue.
_INTERRUPTED = threading.Event()
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # a terminal's Ctrl-C; a job scheduler's stop
_received: list[int] = []  # the stop signals this process got, first first


def _on_signal(signum: int, frame: Any) -> None:
    _received.append(signum)
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def _on_first_signal(signum: int, frame: Any) -> None:
    """A pool worker's handler: a terminal's Ctrl-C reaches the worker and the parent passes it
    on too; a second KeyboardInterrupt would cut short the recording of the interrupted trial."""
    if not _INTERRUPTED.is_set():
        _on_signal(signum, frame)


def catch_stop_signals(*, once: bool = False) -> dict[int, Any]:
    """Make Ctrl-C and SIGTERM interrupt the sweep (KeyboardInterrupt, and ``_INTERRUPTED`` set);
    ``once``: only the first of them raises. Returns the handlers replaced, for
    ``restore_signals`` (none off the main thread, where signals cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _INTERRUPTED.clear()
    _received.clear()
    handler = _on_first_signal if once else _on_signal
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def stop_signal() -> int:
    """The signal that stopped this process (SIGINT for an interrupt that was not a signal)."""
    return _received[0] if _received else signal.SIGINT


def _others_running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def work(plan: WorkerPlan, counter: Any = None, parent: int | None = None,
         stop: Any = None) -> int:
    """Claim and run trials until the queue is empty and no other trial runs; returns how many
    this worker ran. ``counter`` (a shared integer) enforces ``plan.limit`` across workers;
    ``stop`` (a shared event), once set, raises KeyboardInterrupt before the next claim."""
    _quiet_optuna()
    if plan.threads:
        import torch

        torch.set_num_threads(plan.threads)
    import suite.run.train  # noqa: F401 - seconds of imports, before a claim rather than after

    study = open_study(plan.spec, plan.url)
    ran = 0
    while True:
        if _INTERRUPTED.is_set() or (stop is not None and stop.is_set()):
            raise KeyboardInterrupt
        if parent is not None and os.getppid() != parent:
            break  # the sweep command was killed: do not go on alone
        if plan.limit is not None and counter is not None:
            with counter.get_lock():
                if counter.value >= plan.limit:
                    break
                counter.value += 1
        trial = claim(study)
        if trial is None:
            if plan.limit is not None and counter is not None:
                with counter.get_lock():
                    counter.value -= 1
            with queue_lock(plan.url):
                state = sync_queue(study, plan.spec, retry_crashed=False, grace=plan.grace)
            if state.enqueued:
                continue
            if not _others_running(study):
                break
            time.sleep(_POLL_SECONDS)  # another worker's trial may yet be lost and queued again
            continue
        _run_claimed(trial, plan)
        ran += 1
    return ran


def _run_claimed(trial: optuna.Trial, plan: WorkerPlan) -> None:
    try:
        _log_start(trial)
        run_trial(trial, plan)
    except KeyboardInterrupt:
        # One that lands between the claim and the fit (run_trial records the others) must not
        # leave the trial RUNNING until another sweep takes it for lost.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            record_interrupted(trial)
        raise
    except optuna.exceptions.UpdateFinishedTrialError as err:
        # Another process ended this trial while it ran (taken for lost: no heartbeat within the
        # grace period). Its record stands; this worker goes on with the queue instead of dying.
        print(f"bitsweep: trial {trial.number} was ended by another worker while it ran ({err}); "
              "going on with the next", file=sys.stderr)


EXEC_LOG_ENV = "BITSWEEP_EXEC_LOG"


def _log_start(trial: optuna.Trial) -> None:
    """Test and audit hook: with $BITSWEEP_EXEC_LOG naming a file, each trial a worker starts to
    train adds one line (pid, trial number, slot) to it, so a run done twice shows even when only
    one of the two finished. One O_APPEND write per line: processes never interleave lines."""
    path = os.environ.get(EXEC_LOG_ENV)
    if not path:
        return
    line = f"{os.getpid()}\t{trial.number}\t{trial.user_attrs.get('slot', '')}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _worker_entry(plan: WorkerPlan, counter: Any, parent: int, stop: Any, ready: Any) -> None:
    catch_stop_signals(once=True)
    ready.set()  # from here a signal from the parent is caught (see _stop_workers)
    try:
        work(plan, counter, parent, stop)
    except KeyboardInterrupt:
        sys.exit(130)


def _default_threads(workers: int) -> int | None:
    if workers == 1:
        return None  # train() picks (all cores but one for W&B's service)
    return max(1, (os.cpu_count() or 1) // workers)


# A worker's resident memory once torch, Lightning, a model and its data are in: about 500 MB for
# the suite's models on its data sets. Workers beyond the memory end in the OOM killer midway;
# workers beyond the cores only take turns on them.
WORKER_BYTES = 500 * 2**20


def available_memory() -> int | None:
    """Bytes this process can still take: the kernel's MemAvailable, less where a cgroup (a
    container, a job scheduler's allocation) allows less; None where neither can be read."""
    found = []
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as fh:
        found += [int(line.split()[1]) * 1024 for line in fh
                  if line.startswith("MemAvailable:")]
    with contextlib.suppress(OSError, ValueError):
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((cgroup / "memory.current").read_text()))
    return max(0, min(found)) if found else None


def cap_workers(asked: int) -> int:
    """``asked``, or as many workers as this machine can run (``usable_workers``), said."""
    from suite.run.cores import usable_cores

    used, why = usable_workers(asked, usable_cores(), available_memory())
    if why:
        print(f"bitsweep: {why}", file=sys.stderr)
    return used


def usable_workers(asked: int, cores: int, available: int | None) -> tuple[int, str | None]:
    """How many of ``asked`` workers this machine can run: at most one per core and as many as
    ``available`` bytes hold at WORKER_BYTES each, at least one; with a message when fewer."""
    by_memory = asked if available is None else available // WORKER_BYTES
    used = max(1, min(asked, cores, by_memory))
    if used == asked:
        return asked, None
    why = []  # what binds: the smaller of the two limits (both when equal)
    if cores < asked and cores <= by_memory:
        why.append(f"{cores} CPU core{'s' if cores != 1 else ''} (more workers would only take "
                   "turns on them)")
    if by_memory < asked and by_memory <= cores:
        why.append(f"{available / 2**30:.1f} GB of memory available, a worker takes about "
                   f"{WORKER_BYTES / 2**30:.1f} GB (more would run out of memory)")
    return used, f"workers: {asked} asked, {used} used: this machine has {' and '.join(why)}"


def _work_inline(plan: WorkerPlan, counter: Any, progress: Progress) -> None:
    """The one worker in this process, with a thread redrawing the progress line meanwhile."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(_POLL_SECONDS):
            progress.poll()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        work(plan, counter)
    finally:
        stop.set()
        watcher.join()


def _work_in_pool(plan: WorkerPlan, workers: int, ctx: Any, counter: Any,
                  progress: Progress) -> None:
    """``workers`` spawned worker processes, watched until all have ended. On Ctrl-C or SIGTERM
    (to the whole process group from a terminal, or to this process alone from a job scheduler)
    the workers are stopped (``_stop_workers``) and the KeyboardInterrupt goes on up."""
    stop = ctx.Event()
    ready = [ctx.Event() for _ in range(workers)]
    procs = [ctx.Process(target=_worker_entry, name=f"bitsweep-worker-{i}",
                         args=(WorkerPlan(**{**plan.__dict__, "index": i}), counter, os.getpid(),
                               stop, ready[i]))
             for i in range(workers)]
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            if _INTERRUPTED.is_set():
                raise KeyboardInterrupt
            progress.poll()
            for p in procs:
                p.join(timeout=_POLL_SECONDS / len(procs))
    except KeyboardInterrupt:
        _stop_workers(procs, ready, stop)
        raise
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()  # past its time to stop (or a second Ctrl-C): it ignores more signals
    crashed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if crashed:
        print(f"bitsweep: {len(crashed)} worker(s) exited with {crashed}", file=sys.stderr)


_STOP_SECONDS = 30.0  # for the workers to record their interrupted trials


def _stop_workers(procs: list[Any], ready: list[Any], stop: Any) -> None:
    """Interrupt every worker's trial as a terminal's Ctrl-C does, and let none claim another.

    A job scheduler signals this process only: the signal is passed on to each worker whose
    handler is in place (``ready``); one still starting sees ``stop`` before its first claim.
    ``stop`` is set before ``ready`` is read and a worker sets ``ready`` before it reads ``stop``,
    so no worker misses both. Each gets until ``_STOP_SECONDS`` to record its trial."""
    stop.set()
    for p, up in zip(procs, ready):
        if up.is_set() and p.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + _STOP_SECONDS
    for p in procs:
        if p.pid is not None:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
