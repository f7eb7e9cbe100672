"""Worker processes: each claims trials one after another until the queue is empty. A worker is the
sweep's own process when ``workers == 1``, else that many spawned processes; each imports torch and
Lightning once and trains many runs. Ctrl-C is caught here: the trial at hand is recorded as
interrupted and nothing new is claimed."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from suite.sweep.progress import Progress
from suite.sweep.queue import claim, queue_lock, sync_queue
from suite.sweep.spec import SweepSpec
from suite.sweep.study import _quiet_optuna, open_study
from suite.sweep.trial import run_trial

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


# Set by Ctrl-C. Python raises KeyboardInterrupt at the next bytecode, but one that lands inside a
# finaliser, a weakref callback or a library's blanket except is swallowed; the flag still stops
# the sweep after the trial at hand instead of letting it run the whole queue.
_INTERRUPTED = threading.Event()


def _on_sigint(signum: int, frame: Any) -> None:
    _INTERRUPTED.set()
    signal.default_int_handler(signum, frame)


def _catch_ctrl_c() -> Any:
    """Install the Ctrl-C handler; returns the one it replaced (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _INTERRUPTED.clear()
    return signal.signal(signal.SIGINT, _on_sigint)


def _others_running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def work(plan: WorkerPlan, counter: Any = None, parent: int | None = None) -> int:
    """Claim and run trials until the queue is empty and no other trial runs; returns how many
    this worker ran. ``counter`` (a shared integer) enforces ``plan.limit`` across workers."""
    _quiet_optuna()
    if plan.threads:
        import torch

        torch.set_num_threads(plan.threads)
    study = open_study(plan.spec, plan.url)
    ran = 0
    while True:
        if _INTERRUPTED.is_set():
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
    _log_start(trial)
    try:
        run_trial(trial, plan)
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


def _worker_entry(plan: WorkerPlan, counter: Any, parent: int) -> None:
    _catch_ctrl_c()
    try:
        work(plan, counter, parent)
    except KeyboardInterrupt:
        sys.exit(130)


def _default_threads(workers: int) -> int | None:
    if workers == 1:
        return None  # train() picks (all cores but one for W&B's service)
    return max(1, (os.cpu_count() or 1) // workers)


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
    """``workers`` spawned worker processes, watched until all have ended. On Ctrl-C each gets
    30 s to record its trial before it is terminated, and the KeyboardInterrupt goes on up."""
    procs = [ctx.Process(target=_worker_entry, name=f"bitsweep-worker-{i}",
                         args=(WorkerPlan(**{**plan.__dict__, "index": i}), counter, os.getpid()))
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            if _INTERRUPTED.is_set():
                raise KeyboardInterrupt
            progress.poll()
            for p in procs:
                p.join(timeout=_POLL_SECONDS / len(procs))
    except KeyboardInterrupt:
        for p in procs:  # they got the Ctrl-C too: let them record their trials
            p.join(timeout=30)
        raise
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    crashed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if crashed:
        print(f"bitsweep: {len(crashed)} worker(s) exited with {crashed}; rerun the same "
              "command to resume", file=sys.stderr)


