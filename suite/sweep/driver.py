"""The sweep driver: a validated SweepSpec -> an Optuna study whose trials are RunConfigs.

    run_sweep(load_spec("sweeps/default.yaml"), workers=2)

The study is created (or joined) in its storage, every slot is queued (suite.sweep.queue), and
long-lived workers claim trials one after another until the queue is empty. A worker is this
process when ``workers == 1``, else that many spawned processes; each imports torch and Lightning
once and trains many runs, with the machine's cores split between them. Every trial stores its
RunConfig, RunResult and curves as user attributes, which is all ``bitsweep report`` reads.

Runs land in ``<runs>/<study>/trials/t<number>/`` and their offline W&B runs in
``<runs>/<study>/wandb/``. Rerunning the same command resumes: finished slots are kept, lost and
interrupted ones are queued again.
"""

from __future__ import annotations

import csv
import math
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from suite.run.config import RunConfig
from suite.sweep.progress import Progress
from suite.sweep.queue import (
    GRACE_SECONDS,
    Heartbeat,
    claim,
    queue_lock,
    storage_url,
    sync_queue,
    worst_value,
)
from suite.sweep.slots import slot_identity
from suite.sweep.spec import SweepSpec
from suite.sweep.storage import describe, open_storage
from suite.sweep.tuning import CellSampler, make_pruner, suggest

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


def _quiet_optuna() -> None:
    # Optuna logs every trial at INFO; the sweep prints its own progress.
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_study(spec: SweepSpec, url: str) -> optuna.Study:
    """Create or join the study, with the per-cell sampler and pruner, and name its objective.

    Under the queue lock: machines started together on a fresh database otherwise race to create
    Optuna's tables (PostgreSQL: UniqueViolation on pg_type, SQLite: alembic_version) and die.
    """
    _quiet_optuna()
    with queue_lock(url):
        study = optuna.create_study(
            study_name=spec.study, storage=open_storage(url), direction=spec.direction,
            sampler=CellSampler(), pruner=make_pruner(spec.pruner), load_if_exists=True,
        )
        if study.metric_names is None:  # a new study, or one made before studies named it
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2: not the user's concern
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([spec.metric])
    return study


def _spec_yaml(spec: SweepSpec) -> str:
    if spec.path and Path(spec.path).is_file():
        return Path(spec.path).read_text()
    return yaml.safe_dump(spec.raw, sort_keys=False)


def _read_curves(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in row.items()})
    return rows


def _monitor_metric(metric: str) -> str:
    # Pruning needs a value every epoch: test/best metrics are only known at the end.
    return {"test_acc": "val_acc", "best_val_acc": "val_acc"}.get(metric, metric)


def _epoch_callbacks(trial: optuna.Trial, spec: SweepSpec) -> list[Any]:
    """Report the objective every epoch (optuna-dashboard's learning curves); prune only when the
    spec has a pruner."""
    from suite.sweep.reporter import ReportObjective  # imports Lightning: in the worker only

    return [ReportObjective(trial, _monitor_metric(spec.metric), prune=spec.pruner != "none")]


# Axes this process could not record as params (warned once each).
_UNRECORDED: set[str] = set()


def _axis_distribution(axis: str, values: tuple[Any, ...], value: Any,
                       stored: Any) -> optuna.distributions.CategoricalDistribution | None:
    """The distribution to record ``axis=value`` under, or None when it cannot be recorded."""
    if not all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
        return None  # e.g. tags: Optuna's categorical choices are scalars
    dist = optuna.distributions.CategoricalDistribution(values)
    if stored is None or stored == dist:
        return dist
    # Optuna keeps a param name's first distribution for the whole study: a value the grid
    # had then is recorded under it; one a grown grid added cannot be recorded at all.
    choices = getattr(stored, "choices", ())
    if any(type(c) is type(value) and c == value for c in choices):
        return stored
    if axis not in _UNRECORDED:
        _UNRECORDED.add(axis)
        print(f"bitsweep: grid axis {axis}={value!r} is not recorded as an Optuna param: the study "
              f"recorded {axis} over {list(choices)} first, and Optuna fixes a param's choices "
              "for the whole study", file=sys.stderr)
    return None


def axis_params(study: optuna.Study, spec: SweepSpec,
                cell: dict[str, Any]) -> dict[str, optuna.distributions.CategoricalDistribution]:
    """The grid axes of ``cell`` (a RunConfig dict) that can be recorded as Optuna params, each
    with its distribution: categorical over the axis's values as the spec lists them, or the one
    the study recorded that axis under first (which Optuna holds it to)."""
    tuned = {p.name for p in spec.tune}  # a tuned field is a param already, and not the cell's
    stored: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            stored.setdefault(name, dist)  # the first trial's: what the storage checks against
    out = {}
    for axis, values in spec.axis_values().items():
        if axis in tuned or axis not in cell:
            continue
        dist = _axis_distribution(axis, values, cell[axis], stored.get(axis))
        if dist is not None:
            out[axis] = dist
    return out


def _record_axes(trial: optuna.Trial, spec: SweepSpec, cell: dict[str, Any]) -> optuna.Trial:
    """Store the trial's grid values as Optuna params (axis_params), so optuna-dashboard's
    parallel-coordinate, slice and importance views have them; returns the trial read again,
    its params now including them."""
    recorded = False
    for axis, dist in axis_params(trial.study, spec, cell).items():
        try:
            trial.storage.set_trial_param(trial._trial_id, axis, dist.to_internal_repr(cell[axis]),  # noqa: SLF001
                                          dist)
            recorded = True
        except ValueError as err:  # another machine recorded it first with other choices
            print(f"bitsweep: grid axis {axis} is not recorded as an Optuna param: {err}",
                  file=sys.stderr)
    return optuna.Trial(trial.study, trial._trial_id) if recorded else trial  # noqa: SLF001


def run_trial(trial: optuna.Trial, plan: WorkerPlan) -> str:
    """Train the trial's configuration and record the outcome in the study; returns its state."""
    from suite.run.train import train

    spec = plan.spec
    attrs = trial.user_attrs
    tuned = {p.name: suggest(trial, p) for p in spec.tune}
    cell = attrs["config"]
    config = RunConfig.from_dict({**cell, **tuned})
    if plan.threads:
        config = config.replace(threads=plan.threads)
    if plan.wandb_offline and config.wandb_mode == "online":
        config = config.replace(wandb_mode="offline")
    study_dir = Path(plan.runs_root) / spec.study
    run_dir = study_dir / "trials" / f"t{trial.number:05d}"
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("run_dir", str(run_dir))
    trial = _record_axes(trial, spec, cell)
    with Heartbeat(trial):
        try:
            result = train(config, run_dir, callbacks=_epoch_callbacks(trial, spec),
                           wandb_dir=study_dir, run_name=f"{spec.study}/t{trial.number}",
                           progress=False)
        except optuna.TrialPruned:
            trial.set_user_attr("curves", _read_curves(run_dir / "curves.csv"))
            trial.study.tell(trial, state=TrialState.PRUNED)
            return "pruned"
        except KeyboardInterrupt:
            trial.set_user_attr("failure", "interrupted")
            trial.set_user_attr("error", "interrupted (Ctrl-C); rerun the sweep to resume")
            trial.study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as err:  # a crash fails this trial only; the sweep goes on
            tb = traceback.format_exc(limit=8)
            trial.set_user_attr("failure", "crash")
            trial.set_user_attr("error", f"{type(err).__name__}: {err}\n{tb}"[-4000:])
            trial.study.tell(trial, state=TrialState.FAIL)
            return "failed"
    trial.set_user_attr("result", result)
    trial.set_user_attr("curves", _read_curves(run_dir / "curves.csv"))
    trial.set_user_attr("diverged", bool(result.get("diverged")))
    value = result.get(spec.metric)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        value = worst_value(spec.direction)
    try:
        trial.study.tell(trial, float(value))
    except optuna.exceptions.UpdateFinishedTrialError:
        # Taken for lost (no heartbeat within the grace period) and queued again elsewhere.
        print(f"bitsweep: trial {trial.number} was declared lost while it ran; its result is "
              f"kept in {run_dir} but not in the study", file=sys.stderr)
        return "lost"
    return "diverged" if result.get("diverged") else "complete"


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


def _counts(study: optuna.Study) -> dict[str, int]:
    """Outcome per slot: a slot retried after a crash counts once, by its last word."""
    outcome: dict[str, str] = {}
    rank = {"failed": 0, "pruned": 1, "diverged": 2, "complete": 2}
    for t in study.get_trials(deepcopy=False):
        slot = t.user_attrs.get("slot")
        slot = slot_identity(slot, t.user_attrs.get("config")) if slot else f"trial-{t.number}"
        if t.state == TrialState.COMPLETE:
            state = "diverged" if t.user_attrs.get("diverged") else "complete"
        elif t.state == TrialState.PRUNED:
            state = "pruned"
        elif t.state == TrialState.FAIL:
            state = "failed"
        else:
            continue
        if slot not in outcome or rank[state] >= rank[outcome[slot]]:
            outcome[slot] = state
    counts = dict.fromkeys(("complete", "diverged", "pruned", "failed"), 0)
    for state in outcome.values():
        counts[state] += 1
    return counts


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


def check_datasets(spec: SweepSpec, *, keep: bool = False) -> None:
    """Load every dataset the grid names, once per (dataset, data_dir, subset), downloads allowed:
    a missing one is fetched into the cache now, once, instead of failing every trial later.
    Raises ConfigError naming the dataset, with the data layer's message. ``keep``: leave them
    in this process's dataset cache, for a worker that runs here."""
    from suite.data import load_dataset
    from suite.run.config import ConfigError
    from suite.run.train import dataset_for

    seen: set[tuple[Any, ...]] = set()
    for cell in spec.cells:
        # as the run will load it: Food-101 at its image_size, a corpus in its tokenizer
        key = (cell.dataset, cell.data_dir, cell.subset, cell.image_size, cell.tokenizer,
               cell.vocab_size)
        if key in seen:
            continue
        seen.add(key)
        try:
            if keep:
                dataset_for(cell)
            else:  # the workers load their own; this process would only hold on to it
                load_dataset(cell.dataset, data_dir=cell.data_dir, subset=cell.subset,
                             seed=cell.seed, block_size=cell.block_size,
                             image_size=cell.image_size, tokenizer=cell.tokenizer,
                             vocab_size=cell.vocab_size)
        except (ValueError, OSError) as err:  # DatasetError is a ValueError
            where = f" (data_dir={cell.data_dir!r})" if cell.data_dir else ""
            raise ConfigError(f"dataset={cell.dataset!r}{where}: {err}") from None


def _wandb_offline(spec: SweepSpec, runs_root: Path) -> bool:
    """Whether trials that ask for online W&B log offline instead: decided once here, in the
    parent, so that an unreachable server costs the sweep one quick check (said once, with the
    ``wandb sync`` command), not a ~30 s timeout per trial in every worker."""
    from suite.run.tracking import decide_mode

    if not any(cell.wandb_mode == "online" for cell in spec.cells):
        return False
    return decide_mode("online", Path(runs_root) / spec.study) != "online"


def run_sweep(spec: SweepSpec, *, workers: int | None = None, storage: str | None = None,
              n_trials: int | None = None, runs_root: Path = Path("runs"),
              threads: int | None = None, grace: float = GRACE_SECONDS) -> dict[str, Any]:
    """Run (or resume, or join) the study of ``spec``; returns a summary of the study's state.

    ``n_trials``: start at most this many trials on this machine. ``grace``: seconds without a
    heartbeat after which another machine's running trial counts as lost.
    """
    workers = workers or spec.workers
    if workers < 1:
        raise ValueError(f"--workers {workers}: need at least 1 worker")
    if n_trials is not None and n_trials < 0:
        raise ValueError(f"--n-trials {n_trials}: must be >= 0")
    check_datasets(spec, keep=workers == 1)  # before the storage or runs/<study>/ exists
    offline = _wandb_offline(spec, runs_root)
    url = storage_url(spec, storage, runs_root)
    start = time.perf_counter()
    study = open_study(spec, url)
    study.set_user_attr("spec", spec.raw)
    study.set_user_attr("spec_yaml", _spec_yaml(spec))
    with queue_lock(url):
        state = sync_queue(study, spec, retry_crashed=True, grace=grace)
    print(f"bitsweep: study {spec.study!r} in {describe(url)}: {state.slots} trials, "
          f"{state.done} done, {state.pending} to run"
          + (f", {state.failed_for_good} failed for good" if state.failed_for_good else ""),
          file=sys.stderr)
    plan = WorkerPlan(spec=spec, url=url, runs_root=str(runs_root),
                      threads=threads or _default_threads(workers), limit=n_trials, grace=grace,
                      wandb_offline=offline)
    progress = Progress(study, state.slots, state.done, spec.axes)
    interrupted = False
    previous_handler = _catch_ctrl_c()
    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    try:
        if workers == 1:
            _work_inline(plan, counter, progress)
        else:
            _work_in_pool(plan, workers, ctx, counter, progress)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        progress.close()
    summary: dict[str, Any] = {"study": spec.study, "storage": describe(url),
                               "runs": str(Path(runs_root) / spec.study), "trials": state.slots,
                               **_counts(study), "seconds": round(time.perf_counter() - start, 1)}
    if interrupted:
        summary["interrupted"] = True
        raise SweepInterrupted(summary)
    return summary


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; carries the summary of what is stored."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__("interrupted")
        self.summary = summary
