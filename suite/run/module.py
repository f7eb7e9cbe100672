"""LightningModules: one shared step for train/val/test; classification and language modelling
differ only in how logits and targets are flattened and which extra metric is logged.

Epoch metrics are summed on the device at every step and published once, at the epoch's end, to
``trainer.callback_metrics``, where ``self.log(..., on_epoch=True)`` put them before; the
training and validation ones reach the loggers as part of the epoch's curves row (EpochRecorder:
one W&B history row per epoch, with every curve the report draws), the test ones from here.
``self.log`` costs about 1 ms a call here whatever is logged (Lightning walks the logged metric's
state on every call, Lightning issue #20388): two calls a step were the larger part of
the fc model's overhead, and even four an epoch would be ~5% of an 8x8-digits epoch. The sums
are the ones Lightning and torchmetrics' micro accuracy kept, in the same order and dtype, so
every number is bit-for-bit what it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from suite.models import model_from_spec
from suite.models.user import logits_of


class _EpochSums:
    """One stage's running sums over an epoch, kept on the device (no host sync before its end).

    ``loss`` is Lightning's on-epoch mean accumulator: float32, ``+= batch mean * batch size``
    from zero, one step at a time (a float32 sum in another order could end an ulp away),
    divided by the summed batch sizes. ``token_loss`` (language models) is the same weighted by
    tokens, for the perplexity. The accuracy is torchmetrics' ``MulticlassAccuracy("micro")``,
    correct predictions over targets, with the hits counted once at the epoch's end."""

    __slots__ = ("loss", "examples", "token_loss", "targets", "predicted", "_hits", "_across")

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.token_loss = torch.zeros((), device=device)
        self.examples = 0
        self.targets = 0
        self._hits: list[torch.Tensor] = []
        # per class, how often it was predicted (the test pass only: a run that predicts one
        # class for every input has collapsed, whatever its accuracy)
        self.predicted: torch.Tensor | None = None
        self._across: _EpochSums | None = None  # the sums over every rank, until the next add

    def add(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, examples: int,
            tokens: bool, count_classes: bool = False) -> None:
        self.loss += loss * examples
        self.examples += examples
        if tokens:
            self.token_loss += loss * target.numel()
        if count_classes:
            counts = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1])
            self.predicted = counts if self.predicted is None else self.predicted + counts
        self._hits.append(logits.argmax(dim=1) == target)
        self.targets += target.numel()
        self._across = None

    def across(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> _EpochSums:
        """The sums over every rank of a data-parallel run, ``reduce`` being an all-reduce sum
        (one collective, made once per epoch: every rank must ask at the same point). Packed in
        float64, where the counts stay exact; the loss sums come back to float32."""
        if self._across is None:
            device = self.loss.device
            hits = torch.cat(self._hits).sum() if self._hits else torch.zeros((), device=device)
            packed = torch.stack([self.loss.double(), self.token_loss.double(), hits.double(),
                                  torch.tensor(float(self.examples), dtype=torch.float64, device=device),
                                  torch.tensor(float(self.targets), dtype=torch.float64, device=device)])
            total = reduce(packed).tolist()
            out = _EpochSums(device)
            out.loss = torch.tensor(total[0], dtype=torch.float32, device=device)
            out.token_loss = torch.tensor(total[1], dtype=torch.float32, device=device)
            out._hits = [torch.tensor([round(total[2])], device=device)]
            out.examples, out.targets = round(total[3]), round(total[4])
            self._across = out
        return self._across

    def accuracy(self) -> torch.Tensor:
        return torch.cat(self._hits).sum().float() / self.targets

    def top_class_share(self) -> float | None:
        """The share of targets predicted as the most often predicted class (None: not counted)."""
        if self.predicted is None or not self.targets:
            return None
        return float(self.predicted.max()) / self.targets


class BitsweepModule(L.LightningModule):
    """Trains ``model_from_spec(model_spec)`` with the optimiser and schedule of ``config``."""

    CHECK_EVERY = 32  # accelerator steps between divergence checks (CPU checks every step)
    PERPLEXITY = False  # language models add {stage}_ppl from the token-weighted loss

    def __init__(self, config: dict[str, Any], model_spec: dict[str, Any], steps_per_epoch: int,
                 num_classes: int) -> None:
        super().__init__()
        # The logger gets the flat RunConfig from train(); the nested hparams would only clutter it.
        self.save_hyperparameters(logger=False)
        self.model = model_from_spec(model_spec)
        self.diverge_loss = float(config["diverge_loss"])
        self.grad_clip = config.get("grad_clip")
        # The step is written out in training_step (the same calls in the same order as Lightning's
        # automatic optimisation): its closure and per-step hook chain were a third of Lightning's
        # overhead on a small model's step.
        self.automatic_optimization = False
        # The bound as the float32 loss is compared with it (``loss > bound`` on the device).
        self._bound32 = float(torch.tensor(self.diverge_loss, dtype=torch.float32))
        self._sums: dict[str, _EpochSums] = {}
        # Set when a training loss is NaN/inf or above the bound: the run stops and says so.
        self.diverged_epoch: int | None = None
        self._bad: torch.Tensor | None = None
        self.check_every_step = True  # set per device when the fit starts

    def on_fit_start(self) -> None:
        self.check_every_step = self.device.type == "cpu"

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name around every hook it calls (~45 times a step), and
        # nn.Module.__setattr__'s parameter/module/buffer checks made that a fifth of its per-step
        # overhead; for a plain string (or None) it ends in object.__setattr__ anyway.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(x))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # A DeviceLoader's batch already sits on the device; Lightning's default would still walk
        # it with apply_to_collection, every batch.
        if (isinstance(batch, tuple) and len(batch) == 2
                and all(isinstance(t, torch.Tensor) and t.device == device for t in batch)):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _flatten(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits, y

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        # a user model may return an object holding its logits (Hugging Face's ModelOutput)
        logits, target = self._flatten(logits_of(self.model(x)), y)
        loss = F.cross_entropy(logits, target)
        sums = self._sums.get(stage)
        if sums is None:
            sums = self._sums[stage] = _EpochSums(loss.device)
        sums.add(loss.detach(), logits.detach(), target, len(x), self.PERPLEXITY,
                 count_classes=stage == "test")
        return loss

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """This epoch's ``{stage}_loss``, ``{stage}_acc`` (and ``{stage}_ppl``) so far, ``stage``
        being train, val or test, as float32 tensors; empty before its first batch."""
        sums = self._sums.get(stage)
        if sums is None or not sums.examples:
            return {}
        if stage == "train" and self._world_size() > 1:
            # each rank trained on its share of every batch; validation and test passes see
            # the whole set on every rank, so their sums are already the global ones
            sums = sums.across(self._all_sum)
        out = {f"{stage}_loss": sums.loss / sums.examples, f"{stage}_acc": sums.accuracy()}
        if self.PERPLEXITY:
            # exp of the token-weighted mean loss (in float64), not the mean of per-batch exps
            mean = float(sums.token_loss) / sums.targets
            ppl = math.exp(min(mean, 50.0)) if math.isfinite(mean) else math.inf
            out[f"{stage}_ppl"] = torch.tensor(ppl, dtype=torch.float32, device=sums.loss.device)
        return out

    def top_class_share(self, stage: str = "test") -> float | None:
        """RunResult.top_class_share of the last ``stage`` pass (counted in the test pass)."""
        sums = self._sums.get(stage)
        return None if sums is None else sums.top_class_share()

    def _world_size(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    def _all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def _global_batch(self, loss: torch.Tensor, examples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the global batch's mean loss, this rank's loss scale) of a data-parallel step, with one
        all-reduce. DDP averages the ranks' gradients: scaled by examples * ranks / global
        examples (1 when the shares are equal, as all but a shorter last batch's are), the
        average is the gradient of the global batch's mean loss, as one process computes it."""
        packed = torch.stack([loss.double() * examples,
                              torch.tensor(float(examples), dtype=torch.float64, device=loss.device)])
        total = self._all_sum(packed)
        return ((total[0] / total[1]).float(),
                (examples * self._world_size() / total[1]).float())

    def publish(self, stage: str) -> None:
        """Put ``stage``'s epoch metrics into ``trainer.callback_metrics`` (Optuna's pruning
        callback reads val_acc there at validation end), where ``self.log(..., on_epoch=True)``
        would; the test metrics also go to each logger, with the epoch count."""
        values = self.epoch_metrics(stage)
        trainer = self._trainer
        if trainer is None or not values:
            return
        trainer.callback_metrics.update(values)
        if stage != "test" or not trainer.loggers:
            return  # train and val reach the loggers in the epoch's curves row
        step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
        scalars = {**{k: v.item() for k, v in values.items()}, "epoch": trainer.current_epoch}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
            logger.save()

    def on_train_epoch_start(self) -> None:
        self._sums.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._sums.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._sums.pop("test", None)

    def on_train_epoch_end(self) -> None:
        self.publish("train")

    def on_validation_epoch_end(self) -> None:
        self.publish("val")

    def on_test_epoch_end(self) -> None:
        self.publish("test")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        opt, schedule = self.optimizers(), self.lr_schedulers()
        loss = self._step(batch, "train")
        opt.zero_grad()
        checked = loss.detach()
        if self._world_size() > 1:
            # every rank judges the global batch's loss, so all stop at the same step (a rank
            # that skipped the backward would leave the others waiting in DDP's all-reduce)
            checked, scale = self._global_batch(checked, len(batch[0]))
            loss = loss * scale
        if self._diverged(checked, batch_idx):
            # Stop rather than train on garbage; the result records the epoch (1-based).
            self.diverged_epoch = self.current_epoch + 1
            self.trainer.should_stop = True
            schedule.step()  # as the automatic loop did after every batch, even a skipped one
            return None  # no backward, no optimiser step on this batch
        self.manual_backward(loss)
        opt.step()  # calls the callbacks' and then this module's on_before_optimizer_step
        schedule.step()
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A data-parallel epoch's training sums are reduced here, after its last batch (or the
        # step that stops it), on every rank at once: epoch_metrics("train") then reads them
        # without a collective, so rank-0-only callers (EpochRecorder, a sweep's reporter) can.
        trainer = self.trainer
        if self._world_size() > 1 and (batch_idx + 1 >= trainer.num_training_batches
                                       or trainer.should_stop):
            self._sums["train"].across(self._all_sum)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Where the automatic loop clipped: after the callbacks saw the gradient (EpochRecorder's
        # grad_norm is the norm before clipping), with the same call.
        if self.grad_clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip,
                                gradient_clip_algorithm="norm")

    def _diverged(self, loss: torch.Tensor, batch_idx: int) -> bool:
        """NaN/inf, or above the bound. On CPU the loss is read every step (no pipeline to stall);
        on an accelerator the flag is kept on the device and read every CHECK_EVERY steps and on
        the epoch's last batch, so the recorded epoch is exact."""
        if self.check_every_step:
            value = loss.item()
            return not (math.isfinite(value) and value <= self._bound32)
        bad = ~torch.isfinite(loss) | (loss > self.diverge_loss)
        self._bad = bad if self._bad is None else self._bad | bad
        last = batch_idx + 1 >= self.trainer.num_training_batches
        if not (last or (batch_idx + 1) % self.CHECK_EVERY == 0):
            return False
        flagged = bool(self._bad)
        self._bad = None
        return flagged

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    @torch.inference_mode()
    def evaluate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 stage: str = "test") -> dict[str, float]:
        """One pass over ``batches`` in eval mode, published and returned as ``trainer.test``
        does it (same steps, same sums, same numbers, same logger record), without the cost of
        setting up a Lightning loop for a few batches: without gradients, and under the fit's
        autocast (Lightning's precision plugin), so a bf16 run is tested as it validated."""
        was_training = self.training
        self.eval()
        trainer = self._trainer
        autocast = trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()
        try:
            self._sums.pop(stage, None)
            with torch.no_grad(), autocast:
                for batch in batches:
                    self._step(batch, stage)
        finally:
            self.train(was_training)
        self.publish(stage)
        return {k: float(v) for k, v in self.epoch_metrics(stage).items()}

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
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_factor(cfg, self.hparams.steps_per_epoch))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lr_factor(cfg: dict[str, Any], steps_per_epoch: int) -> Callable[[int], float]:
    """The per-step learning-rate factor: linear warm-up, then constant, linear or cosine decay."""
    total = max(1, steps_per_epoch * cfg["epochs"])
    warmup = int(round(cfg["warmup_epochs"] * steps_per_epoch))
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

    return factor


class ClassifierModule(BitsweepModule):
    """Image classification: logits (B, classes)."""


class LanguageModelModule(BitsweepModule):
    """Next-token prediction: logits (B, T, vocab) flattened over positions; the accuracy is token
    accuracy and perplexity = exp(mean loss per token) is added at the end of each epoch."""

    PERPLEXITY = True

    def _flatten(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)


def module_for(task: str) -> type[BitsweepModule]:
    return LanguageModelModule if task == "text" else ClassifierModule
