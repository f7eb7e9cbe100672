"""Opening a sweep's Optuna study: created or joined in its storage, with the per-cell sampler and
pruner. Its own module because the parent (driver), each worker (workers) and the W&B agent
(wandb) all open the study the same way."""

from __future__ import annotations

import warnings

import optuna

from suite.sweep.queue import queue_lock
from suite.sweep.spec import SweepSpec
from suite.sweep.storage import open_storage
from suite.sweep.tuning import CellSampler, make_pruner


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

