"""The Lightning callback that reports a trial's objective to Optuna every epoch, and prunes.

Its own module (imported by the worker only: it imports Lightning) so that it pickles: a
data-parallel run on CUDA starts its ranks as fresh processes, which receive their callbacks
pickled. An optuna.Trial does not pickle (its Study holds a thread-local), so the callback
carries the trial's storage, study name, trial id and pruner, and rebuilds its Trial on the far
side; the storages pickle (RDB reconnects, a journal reopens its file).
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import optuna


class ReportObjective(L.Callback):
    """optuna_integration's PyTorchLightningPruningCallback (single process), reporting the
    objective at each validation end whether or not a pruner runs: the same steps (the 0-based
    epoch) and values, so pruning decides as before."""

    def __init__(self, trial: optuna.Trial, monitor: str, prune: bool) -> None:
        self.trial, self.monitor, self.prune = trial, monitor, prune

    def __getstate__(self) -> dict[str, Any]:
        study = self.trial.study
        return {"storage": study._storage, "study_name": study.study_name,  # noqa: SLF001
                "trial_id": self.trial._trial_id, "pruner": study.pruner,  # noqa: SLF001
                "monitor": self.monitor, "prune": self.prune}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # the sampler is never asked (the trial's params are set): a random one costs nothing
        study = optuna.load_study(study_name=state["study_name"], storage=state["storage"],
                                  pruner=state["pruner"], sampler=optuna.samplers.RandomSampler())
        self.trial = optuna.Trial(study, state["trial_id"])
        self.monitor, self.prune = state["monitor"], state["prune"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:  # not an epoch
            return
        metrics = dict(trainer.callback_metrics)
        if self.monitor.startswith("train_"):
            # The module publishes its training metrics after validation, so callback_metrics
            # hold the last epoch's: take this epoch's, as curves.csv records them.
            metrics.update(pl_module.epoch_metrics("train"))
        score = metrics.get(self.monitor)
        if score is None:
            warnings.warn(f"objective {self.monitor!r} is not among the epoch metrics "
                          f"({', '.join(sorted(metrics))}): nothing reported", stacklevel=1)
            return
        self.report(float(score), pl_module.current_epoch)

    def report(self, score: float, epoch: int) -> None:
        """Report ``score`` at step ``epoch`` (0-based); raise TrialPruned when the pruner says so."""
        self.trial.report(score, step=epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")
