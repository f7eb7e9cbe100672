"""Per-epoch curves: losses, accuracies, learning rate, gradient norm, weight flip rate and (as an
option) weight oscillation."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from suite.run.files import CURVE_COLUMNS  # noqa: F401 - the rows' columns, one table for all
from suite.run.meter import StabilityMeter

# The curves whose best epoch is a run's W&B summary (``best/<curve>``), and which way is better.
BEST = {"val_acc": max, "val_loss": min, "val_ppl": min, "train_loss": min}


def best_values(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``best/<curve>`` over the epochs that have a finite value (a diverged epoch's NaN is not
    a best)."""
    out = {}
    for key, better in BEST.items():
        seen = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if seen:
            out[f"best/{key}"] = better(seen)
    return out


class EpochRecorder(L.Callback):
    """Collects one row per finished epoch into ``rows`` (the run's curves.csv): the module's
    losses and accuracies, the learning rate and the stability curves of suite.run.meter (flip
    rate, gradient norm and, with ``track_oscillation``, oscillation; else that column stays
    empty)."""

    def __init__(self, track_oscillation: bool = False) -> None:
        self.rows: list[dict[str, Any]] = []
        self._meter = StabilityMeter(track_oscillation)
        self._params: list[torch.nn.Parameter] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._params = list(pl_module.parameters())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._meter.start_epoch(pl_module.model)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._meter.after_step(pl_module.model)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        self._meter.add_grad_norm(self._params)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation published its epoch metrics already; the module publishes the training ones in
        # its own on_train_epoch_end, which Lightning calls after this hook: ask the module.
        metrics = dict(trainer.callback_metrics)
        metrics.update(pl_module.epoch_metrics("train"))

        def get(key: str) -> float | None:
            value = metrics.get(key)
            return None if value is None else float(value)

        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": get("train_loss"),
            "train_acc": get("train_acc"),
            "val_loss": get("val_loss"),
            "val_acc": get("val_acc"),
            "val_ppl": get("val_ppl"),
            **self._meter.end_epoch(pl_module.model),
            "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None,
        }
        if getattr(pl_module, "diverged_epoch", None) is not None:
            row.update(train_loss=math.nan, val_loss=math.nan, val_acc=math.nan, val_ppl=None)
        self.rows.append(row)
        # the row is the loggers' epoch record too: W&B's history holds the report's curves
        logged = {k: v for k, v in row.items() if v is not None}
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)
