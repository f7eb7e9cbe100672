"""LightningModules: one shared step for train/val/test; classification and language modelling
differ only in how logits and targets are flattened and which extra metric is logged."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from suite.models import model_from_spec


class BitsweepModule(L.LightningModule):
    """Trains ``model_from_spec(model_spec)`` with the optimiser and schedule of ``config``."""

    CHECK_EVERY = 32  # accelerator steps between divergence checks (CPU checks every step)

    def __init__(self, config: dict[str, Any], model_spec: dict[str, Any], steps_per_epoch: int,
                 num_classes: int) -> None:
        super().__init__()
        # The logger gets the flat RunConfig from train(); the nested hparams would only clutter it.
        self.save_hyperparameters(logger=False)
        self.model = model_from_spec(model_spec)
        self.diverge_loss = float(config["diverge_loss"])
        self.acc = torch.nn.ModuleDict(
            {s: MulticlassAccuracy(num_classes=num_classes, average="micro") for s in ("tr", "va", "te")}
        )
        # Set when a training loss is NaN/inf or above the bound: the run stops and says so.
        self.diverged_epoch: int | None = None
        self._bad: torch.Tensor | None = None
        self.check_every_step = True  # set per device when the fit starts

    def on_fit_start(self) -> None:
        self.check_every_step = self.device.type == "cpu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _flatten(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits, y

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits, target = self._flatten(self.model(x), y)
        loss = F.cross_entropy(logits, target)
        acc = self.acc[stage[:2]]
        acc.update(logits.detach(), target)
        name = {"tr": "train", "va": "val", "te": "test"}[stage[:2]]
        self.log(f"{name}_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(x))
        self.log(f"{name}_acc", acc, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        loss = self._step(batch, "train")
        # Divergence (NaN/inf, or above the bound) is flagged on the device; reading the flag back
        # is a host sync, cheap on CPU (every step) but a pipeline stall on a GPU, where it is read
        # every CHECK_EVERY steps and on the epoch's last batch, so the recorded epoch is exact.
        bad = ~torch.isfinite(loss.detach()) | (loss.detach() > self.diverge_loss)
        self._bad = bad if self._bad is None else self._bad | bad
        last = batch_idx + 1 >= self.trainer.num_training_batches
        if self.check_every_step or last or (batch_idx + 1) % self.CHECK_EVERY == 0:
            flagged = bool(self._bad)
            self._bad = None
            if flagged:
                # Stop rather than train on garbage; the result records the epoch (1-based).
                self.diverged_epoch = self.current_epoch + 1
                self.trainer.should_stop = True
                return None  # no backward, no optimiser step on this batch
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        cfg = self.hparams.config
        params = [p for p in self.parameters() if p.requires_grad]
        if cfg["optimizer"] == "sgd":
            opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9, nesterov=True,
                                  weight_decay=cfg["weight_decay"])
        elif cfg["optimizer"] == "adamw":
            opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        else:
            opt = torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        total = max(1, self.hparams.steps_per_epoch * cfg["epochs"])
        warmup = int(round(cfg["warmup_epochs"] * self.hparams.steps_per_epoch))
        schedule = cfg["schedule"]

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            if schedule == "linear":
                return 1.0 - progress
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ClassifierModule(BitsweepModule):
    """Image classification: logits (B, classes)."""


class LanguageModelModule(BitsweepModule):
    """Next-token prediction: logits (B, T, vocab) flattened over positions; the accuracy is token
    accuracy and perplexity = exp(mean loss) is added at the end of each epoch."""

    def _flatten(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # token-weighted loss sums per stage, kept on the device (no per-step host sync)
        self._loss_sum: dict[str, list[Any]] = {}

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        loss = super()._step(batch, stage)
        total = self._loss_sum.setdefault(stage, [0.0, 0])
        total[0] = total[0] + loss.detach().float() * batch[1].numel()
        total[1] += batch[1].numel()
        return loss

    def _log_ppl(self, stage: str) -> None:
        # exp of the token-weighted mean loss, not the mean of per-batch exps.
        loss_sum, count = self._loss_sum.pop(stage, [0.0, 0])
        if count:
            mean = float(loss_sum) / count
            self.log(f"{stage}_ppl", math.exp(min(mean, 50.0)) if math.isfinite(mean) else math.inf)

    def on_train_epoch_end(self) -> None:
        self._log_ppl("train")

    def on_validation_epoch_end(self) -> None:
        self._log_ppl("val")

    def on_test_epoch_end(self) -> None:
        self._log_ppl("test")


def module_for(task: str) -> type[BitsweepModule]:
    return LanguageModelModule if task == "text" else ClassifierModule
