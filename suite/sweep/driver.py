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

This module orchestrates; one claimed trial is run by suite.sweep.trial, the worker processes and
their signals are suite.sweep.workers, and opening the study is suite.sweep.study.
"""

from __future__ import annotations

import multiprocessing as mp
import shlex
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from suite.sweep.checksum import damage_lines
from suite.sweep.progress import Progress
from suite.sweep.queue import GRACE_SECONDS, queue_lock, storage_url, sync_queue, undone
from suite.sweep.slots import slot_identity
from suite.sweep.spec import SweepSpec
from suite.sweep.storage import describe, redact
from suite.sweep.study import open_study
from suite.sweep.studyspec import record_spec
from suite.sweep.trial import _epoch_callbacks, _monitor_metric, _read_curves, axis_params
from suite.sweep.workers import (
    WorkerPlan,
    _default_threads,
    _work_in_pool,
    _work_inline,
    cap_workers,
    catch_stop_signals,
    restore_signals,
    stop_signal,
    work,
)

# open_study, axis_params and the curves helpers lived here before the driver was split into
# study, trial and workers; other modules and tests still import them from here.
__all__ = ["SweepInterrupted", "WorkerPlan", "axis_params", "check_datasets", "open_study",
           "run_sweep", "work", "_epoch_callbacks", "_monitor_metric", "_read_curves"]


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


_MODEL_FIELDS = ("model", "model_args", "width", "precision", "scale_rule", "per_channel",
                 "quantize_bias", "conv_norm", "layers", "keep_fp32")


def check_datasets(spec: SweepSpec, *, keep: bool = False) -> None:
    """Load every dataset the grid names, once per load request (suite.data.load_request, the
    seed aside: it only picks a subset), downloads allowed: a missing one is fetched into the
    cache now, once, instead of failing every trial later. On that data, the user's code is
    checked once per model configuration (suite.run.train.check_model: the factory imports,
    builds, quantises and gives logits of the right shape; a loader's data fits the model), as
    a run would in its set-up. Raises ConfigError naming the field, with the underlying error.
    ``keep``: leave the data in this process's dataset cache, for a worker that runs here."""
    import json

    from suite.data import load_dataset, load_request, names
    from suite.models.names import is_user_model
    from suite.run.config import ConfigError
    from suite.run.train import check_model, dataset_for

    by_data: dict[str, list[Any]] = {}
    for cell in spec.cells:
        # as the run will load it: Food-101 at its image_size, a corpus in its tokenizer
        request = {k: v for k, v in load_request(cell).items() if k != "seed"}
        by_data.setdefault(json.dumps(request, sort_keys=True), []).append(cell)
    checked: set[str] = set()
    for data_key, cells in by_data.items():
        cell = cells[0]
        try:
            # the workers load their own; without keep this process holds it for the checks only
            data = dataset_for(cell) if keep else load_dataset(**load_request(cell))
        except (ValueError, OSError) as err:  # DatasetError is a ValueError
            where = f" (data_dir={cell.data_dir!r})" if cell.data_dir else ""
            args = f" (dataset_args={cell.dataset_args!r})" if cell.dataset_args else ""
            raise ConfigError(f"dataset={cell.dataset!r}{args}{where}: {err}") from None
        for cell in cells:
            if not (is_user_model(cell.model) or names.is_user_dataset(cell.dataset)):
                continue
            # what builds the model: one check per distinct model, whatever else the cells vary
            key = json.dumps([data_key, *(getattr(cell, f, None) for f in _MODEL_FIELDS)])
            if key not in checked:
                checked.add(key)
                check_model(cell, data)


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
              threads: int | None = None, grace: float = GRACE_SECONDS,
              extend: bool = False) -> dict[str, Any]:
    """Run (or resume, or join) the study of ``spec``; returns a summary of the study's state.

    A study made with another spec is refused (OtherSpec) unless ``extend`` adds this spec's runs.

    ``n_trials``: start at most this many trials on this machine. ``grace``: seconds without a
    heartbeat after which another machine's running trial counts as lost.
    """
    workers = spec.workers if workers is None else workers
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be an integer >= 1, as workers: in the "
                         "sweep file")
    if n_trials is not None and n_trials < 0:
        raise ValueError(f"--n-trials {n_trials}: must be >= 0")
    workers = cap_workers(workers)
    check_datasets(spec, keep=workers == 1)  # before the storage or runs/<study>/ exists
    offline = _wandb_offline(spec, runs_root)
    url = storage_url(spec, storage, runs_root)
    start = time.perf_counter()
    study = open_study(spec, url)
    record_spec(study, spec, url, extend=extend)
    with queue_lock(url):
        state = sync_queue(study, spec, retry_crashed=True, grace=grace)
    print(f"bitsweep: study {spec.study!r} in {describe(url)}: {state.slots} trials, "
          f"{state.done} done, {state.pending} to run"
          + (f", {state.failed_for_good} failed for good" if state.failed_for_good else ""),
          file=sys.stderr)
    for line in damage_lines(study.get_trials(deepcopy=False), url):
        print(f"bitsweep: {line}", file=sys.stderr)
    plan = WorkerPlan(spec=spec, url=url, runs_root=str(runs_root),
                      threads=threads or _default_threads(workers), limit=n_trials, grace=grace,
                      wandb_offline=offline)
    progress = Progress(study, state.slots, state.done, spec.axes)
    interrupted = False
    previous_handlers = catch_stop_signals()
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
        restore_signals(previous_handlers)
        progress.close()
    summary = {"study": spec.study, "storage": describe(url),
               "runs": str(Path(runs_root) / spec.study), "trials": state.slots,
               **_outcome(study, spec, n_trials, counter.value),
               "seconds": round(time.perf_counter() - start, 1)}
    if interrupted:
        summary["interrupted"] = True
        summary["signal"] = signal.Signals(stop_signal()).name
        raise SweepInterrupted(summary, stop_signal())
    return summary


def _outcome(study: optuna.Study, spec: SweepSpec, n_trials: int | None,
             started: int) -> dict[str, Any]:
    """The summary's counts: outcome per slot, and what is left of the spec (``undone_line``)."""
    left = undone(study, spec)
    outcome: dict[str, Any] = {**_counts(study), "missing": left.total}
    if left.total:
        outcome["undone"] = asdict(left)
    if n_trials is not None:  # trials left for later by --n-trials are no failure
        outcome["n_trials_reached"] = started >= n_trials
    return outcome


def undone_line(summary: dict[str, Any], argv: list[str]) -> str | None:
    """The closing line of a sweep that left trials of its spec undone, or None when it did not
    (trials that ``--n-trials`` left for later are not undone): how many, why, and the command
    that resumes them (``argv``: the command's arguments; a password in them is hidden)."""
    left = summary.get("undone")
    if not left or (summary.get("n_trials_reached") and not left["failed"]
                    and not left["failed_for_good"]):
        return None
    why = [f"{left['failed']} failed"] if left["failed"] else []
    if left["unfinished"]:
        why.append(f"{left['unfinished']} not finished (a worker stopped or died)")
    if left["failed_for_good"]:
        why.append(f"{left['failed_for_good']} failed too often to be retried (their errors: "
                   "bitsweep report)")
    line = (f"bitsweep sweep: {summary['missing']} of {summary['trials']} trials of the spec "
            f"not done: {', '.join(why)}")
    if left["failed"] or left["unfinished"]:
        line += f". Resume them with: bitsweep {redact(shlex.join(argv))}"
    return line


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; carries the summary of what is stored."""

    def __init__(self, summary: dict[str, Any], signum: int = signal.SIGINT) -> None:
        super().__init__("interrupted")
        self.summary = summary
        self.signum = signum  # the exit status is 128 + it, as a shell gives
