"""Per-epoch curves: losses, accuracies, learning rate, gradient norm and weight flip rate."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from suite.quant import QuantMixin

CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_ppl",
                 "grad_norm", "flip_rate", "lr")


def _level_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    snap = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantMixin):
            for key, qt in module.quantized_tensors().items():
                snap[f"{name}.{key}"] = qt.indices.clone()
    return snap


class EpochRecorder(L.Callback):
    """Collects one row per finished epoch into ``rows`` (the run's curves.csv).

    The flip rate is the fraction of quantised weights whose grid level changed during the epoch:
    a direct measure of how restless low-resolution training is. The gradient norm is the mean
    over the epoch's steps of the global L2 norm before the optimiser step.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._snapshot: dict[str, torch.Tensor] = {}
        self._grad_sum: float | torch.Tensor = 0.0
        self._grad_steps = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._snapshot = _level_snapshot(pl_module.model)
        self._grad_sum, self._grad_steps = 0.0, 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            # summed on the device and read once per epoch: no host sync per step
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).detach()
            self._grad_sum = self._grad_sum + norm
            self._grad_steps += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics

        def get(key: str) -> float | None:
            value = metrics.get(key)
            return None if value is None else float(value)

        flips = None
        if self._snapshot:
            after = _level_snapshot(pl_module.model)
            changed = sum(int((after[k] != v).sum()) for k, v in self._snapshot.items())
            total = sum(v.numel() for v in self._snapshot.values())
            flips = changed / total if total else None
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        diverged = getattr(pl_module, "diverged_epoch", None) is not None
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": math.nan if diverged else get("train_loss"),
            "train_acc": get("train_acc"),
            "val_loss": math.nan if diverged else get("val_loss"),
            "val_acc": math.nan if diverged else get("val_acc"),
            "val_ppl": None if diverged else get("val_ppl"),
            "grad_norm": float(self._grad_sum) / self._grad_steps if self._grad_steps else None,
            "flip_rate": flips,
            "lr": lr,
        }
        self.rows.append(row)
