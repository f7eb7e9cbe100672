"""``BitsweepQAT``: bitsweep's quantisation-aware training for a user's own LightningModule.

    import lightning as L
    from suite import BitsweepQAT

    trainer = L.Trainer(max_epochs=10, callbacks=[BitsweepQAT("2.32", keep_fp32="ends")])
    trainer.fit(MyModule(), datamodule)     # the module's own training_step and optimiser
    model = BitsweepQAT.load("lightning_logs/version_0/model.bsw", MyModule())

What it does, hook by hook:

- ``setup`` (every stage; once per module): ``suite.quant.quantize_`` swaps the module's weight
  layers in place for bitsweep's quantised layers, keeping their weights. Lightning calls the
  callbacks' ``setup`` before ``configure_optimizers``, so the optimiser the module makes sees
  the quantised layers (and a learned rule's grid steps), and before a checkpoint is restored,
  so ``ckpt_path`` resumes into the same layers. The model must exist by then: build it in
  ``__init__``, not in ``configure_model`` (a fit whose module has nothing to quantise stops
  with that said).
- every training epoch: the stability curves of ``suite.run.meter`` (``flip_rate``,
  ``grad_norm`` and, with ``track_oscillation``, ``oscillation``) through ``pl_module.log``,
  so they reach every logger the trainer has (metrics.csv, W&B, TensorBoard) and
  ``callback_metrics`` (a ModelCheckpoint or EarlyStopping may monitor them); also kept in
  ``rows``.
- ``on_fit_end`` (rank 0): the packed model (``.bsw``: level indices at about log2 N bits per
  weight, suite.pack) at ``packed``, by default ``model.bsw`` in the trainer's log directory.
  Its header records the quantisation settings, so ``BitsweepQAT.load(path, fresh_module)``
  quantises a freshly built module the same way and loads the stored grid values into it.

Lightning removed its own ``QuantizationAwareTraining`` callback in 2.0 (it wrapped torch.ao's
8-bit quantisation); this one is for 1 to 4 bits.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from suite.pack.format import PackError, packed_to_model, read_packed, save_packed
from suite.pack.rundir import PACKED_NAME, QAT_META_KEY
from suite.quant.layers import QuantMixin
from suite.quant.policy import check_keep_fp32, rule_strings
from suite.quant.resolution import parse_resolution
from suite.quant.scale import DEFAULT_SCALE_RULE, ScaleRule, get_scale_rule
from suite.run.meter import STABILITY_CURVES, StabilityMeter


@dataclass(frozen=True)
class QATSettings:
    """``quantize_``'s arguments, validated, in the JSON form a packed file records."""

    resolution: str
    scale_rule: str = DEFAULT_SCALE_RULE
    per_channel: bool = False
    quantize_bias: bool | None = None
    layers: tuple[str, ...] = ()
    keep_fp32: str = "none"

    def quantize(self, model: nn.Module) -> Any:
        from suite.quant import quantize_

        return quantize_(model, self.resolution, scale_rule=self.scale_rule,
                         per_channel=self.per_channel, quantize_bias=self.quantize_bias,
                         layers=list(self.layers), keep_fp32=self.keep_fp32)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": list(self.layers)}


def _settings(resolution: Any, scale_rule: str | ScaleRule, per_channel: bool,
              quantize_bias: bool | None, layers: Any, keep_fp32: str) -> QATSettings:
    return QATSettings(
        resolution=parse_resolution(resolution).label,
        # a rule object is recorded by its name: a packed file is loaded where it is registered
        scale_rule=get_scale_rule(scale_rule).name,
        per_channel=bool(per_channel),
        quantize_bias=quantize_bias,
        layers=rule_strings(layers),
        keep_fp32=check_keep_fp32(keep_fp32),
    )


class BitsweepQAT(L.Callback):
    """Quantise a LightningModule at setup, log its stability curves per epoch, pack it at the
    end of the fit.

    ``resolution``: any label bitsweep accepts (``"1"``, ``"1.58"``, ``"2.32"``, ``"4"``,
    ``"N=7"``, ``"bnn"``, ``"fp32"``). ``scale_rule``, ``per_channel``, ``quantize_bias``,
    ``layers`` (ordered ``pattern=resolution`` rules, first match wins) and ``keep_fp32``
    (``none|first|last|ends``) are ``suite.quant.quantize_``'s. ``target``: the attribute of the
    module that holds the network (``"model"``), or None for the whole module; the packed file
    holds that network. ``packed``: the packed file's path, relative to the trainer's log
    directory (``trainer.log_dir``, else its ``default_root_dir``) unless absolute; None: none.
    Bad values raise ValueError here, before any training.
    """

    def __init__(self, resolution: Any = "2", *, scale_rule: str | ScaleRule = DEFAULT_SCALE_RULE,
                 per_channel: bool = False, quantize_bias: bool | None = None, layers: Any = (),
                 keep_fp32: str = "none", track_oscillation: bool = False,
                 target: str | None = None, packed: str | os.PathLike[str] | None = PACKED_NAME
                 ) -> None:
        self.settings = _settings(resolution, scale_rule, per_channel, quantize_bias, layers,
                                  keep_fp32)
        self.track_oscillation = bool(track_oscillation)
        self.target = target
        self.packed = packed
        self.summary: Any = None  # what quantize_ did (after setup)
        self.packed_path: Path | None = None  # where the packed model went (after the fit)
        self.rows: list[dict[str, Any]] = []  # one per training epoch: epoch + the curves
        self._quantized: set[int] = set()
        self._meter = StabilityMeter(self.track_oscillation)
        self._params: list[torch.nn.Parameter] = []

    # --- quantisation --------------------------------------------------------------------

    def network(self, pl_module: nn.Module) -> nn.Module:
        """The module that is quantised and packed: ``pl_module`` or its ``target`` attribute."""
        if self.target is None:
            return pl_module
        net = getattr(pl_module, self.target, None)
        if not isinstance(net, nn.Module):
            raise ValueError(f"BitsweepQAT(target={self.target!r}): {type(pl_module).__name__} "
                             f"has no nn.Module attribute {self.target!r}")
        return net

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        net = self.network(pl_module)
        if id(net) in self._quantized:
            return  # fit, then test: quantised once
        self.summary = self.settings.quantize(net)
        if not any(isinstance(m, QuantMixin) for m in net.modules()):
            raise ValueError(f"BitsweepQAT: {type(net).__name__} has no layer to quantise at "
                             f"setup ({stage}); build the model in __init__ (configure_model "
                             "runs after the callbacks' setup), or register_layer its types")
        self._quantized.add(id(net))

    # --- curves --------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._params = list(pl_module.parameters())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._meter.start_epoch(self.network(pl_module))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._meter.after_step(self.network(pl_module))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        self._meter.add_grad_norm(self._params)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        curves = self._meter.end_epoch(self.network(pl_module))
        self.rows.append({"epoch": trainer.current_epoch + 1, **curves})
        for name in STABILITY_CURVES:
            if curves[name] is not None:
                pl_module.log(name, float(curves[name]), on_step=False, on_epoch=True,
                              logger=True)

    # --- packing -------------------------------------------------------------------------

    def packed_file(self, trainer: L.Trainer) -> Path | None:
        if self.packed is None:
            return None
        return Path(trainer.log_dir or trainer.default_root_dir) / self.packed

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.packed_file(trainer)
        if path is None or not trainer.is_global_zero:
            return
        net = self.network(pl_module)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {QAT_META_KEY: self.settings.as_dict(),
                "module": f"{type(net).__module__}.{type(net).__qualname__}"}
        save_packed(net, path, meta)
        self.packed_path = path

    @staticmethod
    def load(path: str | os.PathLike[str], module: nn.Module) -> nn.Module:
        """``module`` (freshly built, as the fit's network was) quantised as the packed file
        records and loaded with its stored grid values; quantised layers frozen, eval mode."""
        packed = read_packed(path)
        recorded = packed.meta.get(QAT_META_KEY)
        if not isinstance(recorded, dict):
            raise PackError(f"{path}: not written by BitsweepQAT (no {QAT_META_KEY!r} in its header)")
        settings = QATSettings(**{**recorded, "layers": tuple(recorded.get("layers", ()))})
        settings.quantize(module)
        return packed_to_model(packed, lambda meta: module)
