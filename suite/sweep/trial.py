"""Running one claimed trial: its RunConfig trained in its run directory, with its grid axes recorded
as Optuna params, its objective reported every epoch, and its outcome (result, curves, failure)
stored as user attributes, which is all ``bitsweep report`` reads."""

from __future__ import annotations

import csv
import math
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from suite.run.config import RunConfig
from suite.run.files import CURVES_NAME
from suite.sweep.checksum import CHECKSUM_ATTR, record_checksum
from suite.sweep.queue import Heartbeat, worst_value
from suite.sweep.spec import SweepSpec
from suite.sweep.tuning import suggest

if TYPE_CHECKING:
    from suite.sweep.workers import WorkerPlan


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


def record_interrupted(trial: optuna.Trial) -> None:
    """Fail a trial stopped by Ctrl-C or SIGTERM: the same command runs its slot again."""
    trial.set_user_attr("failure", "interrupted")
    trial.set_user_attr("error", "interrupted (Ctrl-C); rerun the sweep to resume")
    trial.study.tell(trial, state=TrialState.FAIL)


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
            trial.set_user_attr("curves", _read_curves(run_dir / CURVES_NAME))
            trial.study.tell(trial, state=TrialState.PRUNED)
            return "pruned"
        except KeyboardInterrupt:
            record_interrupted(trial)
            raise
        except Exception as err:  # a crash fails this trial only; the sweep goes on
            tb = traceback.format_exc(limit=8)
            trial.set_user_attr("failure", "crash")
            trial.set_user_attr("error", f"{type(err).__name__}: {err}\n{tb}"[-4000:])
            trial.study.tell(trial, state=TrialState.FAIL)
            return "failed"
    trial.set_user_attr("result", result)
    trial.set_user_attr(CHECKSUM_ATTR, record_checksum(  # the report checks it before any use
        slot=attrs.get("slot"), cell=attrs.get("cell"), config=config.to_dict(), result=result))
    trial.set_user_attr("curves", _read_curves(run_dir / CURVES_NAME))
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


