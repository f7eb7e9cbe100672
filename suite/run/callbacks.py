"""Per-epoch curves: losses, accuracies, learning rate, gradient norm, weight flip rate and (as an
option) weight oscillation."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from suite.quant import QuantMixin
from suite.run.oscillation import OscillationTracker

CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_ppl",
                 "grad_norm", "flip_rate", "oscillation", "lr")
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


def _levels(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every quantised tensor's level indices, computed afresh (nothing else holds them)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantMixin):
            for key, qt in module.quantized_tensors().items():
                out[f"{name}.{key}"] = qt.indices
    return out


def _level_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _levels(model).items()}


def _versions(model: torch.nn.Module) -> tuple[int, ...]:
    # Nothing in a run changes the parameters between one epoch's end and the next one's start;
    # a callback that does so in place (fill_, copy_, load_state_dict) bumps a version counter.
    return tuple(p._version for p in model.parameters())


class EpochRecorder(L.Callback):
    """Collects one row per finished epoch into ``rows`` (the run's curves.csv).

    The flip rate is the fraction of quantised weights whose grid level changed during the epoch:
    a direct measure of how restless low-resolution training is. The gradient norm is the mean
    over the epoch's steps of the global L2 norm before the optimiser step. With
    ``track_oscillation`` the levels are also read after every step and ``oscillation`` is the
    oscillation rate at the epoch's end (suite.run.oscillation); else that column stays empty.
    """

    def __init__(self, track_oscillation: bool = False) -> None:
        self.rows: list[dict[str, Any]] = []
        self._oscillation = OscillationTracker() if track_oscillation else None
        self._snapshot: dict[str, torch.Tensor] = {}
        # the last epoch's closing snapshot, reused as the next one's opening snapshot while no
        # parameter has changed in between (saves one level computation per epoch)
        self._closing: tuple[tuple[int, ...], dict[str, torch.Tensor]] | None = None
        self._params: list[torch.nn.Parameter] = []
        self._grad_sum: float | torch.Tensor = 0.0
        self._grad_steps = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._params = list(pl_module.parameters())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        closing, self._closing = self._closing, None
        if closing is not None and closing[0] == _versions(pl_module.model):
            self._snapshot = closing[1]
        else:
            self._snapshot = _level_snapshot(pl_module.model)
        self._grad_sum, self._grad_steps = 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._oscillation is not None:
            self._oscillation.update(_levels(pl_module.model))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self._params if p.grad is not None]
        if grads:
            # summed on the device and read once per epoch: no host sync per step
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).detach()
            self._grad_sum = self._grad_sum + norm
            self._grad_steps += 1

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
            "grad_norm": float(self._grad_sum) / self._grad_steps if self._grad_steps else None,
            "flip_rate": self._flip_rate(pl_module.model),
            "oscillation": self._oscillation.rate if self._oscillation is not None else None,
            "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None,
        }
        if getattr(pl_module, "diverged_epoch", None) is not None:
            row.update(train_loss=math.nan, val_loss=math.nan, val_acc=math.nan, val_ppl=None)
        self.rows.append(row)
        # the row is the loggers' epoch record too: W&B's history holds the report's curves
        logged = {k: v for k, v in row.items() if v is not None}
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)

    def _flip_rate(self, model: torch.nn.Module) -> float | None:
        if not self._snapshot:
            return None
        after = _level_snapshot(model)
        self._closing = (_versions(model), after)
        total = sum(v.numel() for v in self._snapshot.values())
        if not total:
            return None
        # one host read for all tensors
        changed = torch.stack([(after[k] != v).sum() for k, v in self._snapshot.items()]).sum()
        return int(changed) / total
