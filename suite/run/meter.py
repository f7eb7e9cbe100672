"""The per-epoch stability curves of quantised training: weight flip rate, gradient norm and (as
an option) weight oscillation, measured on any model that holds bitsweep's quantised layers.

One implementation serves a bitsweep run (``suite.run.callbacks.EpochRecorder``, which adds the
losses and accuracies of its own module) and a user's own LightningModule
(``suite.run.qat.BitsweepQAT``).

The flip rate is the fraction of quantised weights whose grid level changed during the epoch:
a direct measure of how restless low-resolution training is. The gradient norm is the mean over
the epoch's steps of the global L2 norm before the optimiser step. With ``track_oscillation`` the
levels are also read after every step and ``oscillation`` is the oscillation rate at the epoch's
end (suite.run.oscillation); else it is None.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from suite.quant import QuantMixin
from suite.run.oscillation import OscillationTracker

# The curves this module measures, as named in curves.csv and in a logger's metrics.
STABILITY_CURVES = ("grad_norm", "flip_rate", "oscillation")


def quantized_levels(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every quantised tensor's level indices, computed afresh (nothing else holds them)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantMixin):
            for key, qt in module.quantized_tensors().items():
                out[f"{name}.{key}"] = qt.indices
    return out


def _level_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in quantized_levels(model).items()}


def _versions(model: torch.nn.Module) -> tuple[int, ...]:
    # Nothing in a run changes the parameters between one epoch's end and the next one's start;
    # a callback that does so in place (fill_, copy_, load_state_dict) bumps a version counter.
    return tuple(p._version for p in model.parameters())


class StabilityMeter:
    """Call ``start_epoch``, then per training step ``add_grad_norm`` (gradients in place, before
    the optimiser step) and ``after_step``, then ``end_epoch`` for the epoch's curves."""

    def __init__(self, track_oscillation: bool = False) -> None:
        self._oscillation = OscillationTracker() if track_oscillation else None
        self._snapshot: dict[str, torch.Tensor] = {}
        # the last epoch's closing snapshot, reused as the next one's opening snapshot while no
        # parameter has changed in between (saves one level computation per epoch)
        self._closing: tuple[tuple[int, ...], dict[str, torch.Tensor]] | None = None
        self._grad_sum: float | torch.Tensor = 0.0
        self._grad_steps = 0

    def start_epoch(self, model: torch.nn.Module) -> None:
        closing, self._closing = self._closing, None
        if closing is not None and closing[0] == _versions(model):
            self._snapshot = closing[1]
        else:
            self._snapshot = _level_snapshot(model)
        self._grad_sum, self._grad_steps = 0.0, 0

    def after_step(self, model: torch.nn.Module) -> None:
        if self._oscillation is not None:
            self._oscillation.update(quantized_levels(model))

    def add_grad_norm(self, params: Iterable[torch.nn.Parameter]) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            # summed on the device and read once per epoch: no host sync per step
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).detach()
            self._grad_sum = self._grad_sum + norm
            self._grad_steps += 1

    def end_epoch(self, model: torch.nn.Module) -> dict[str, float | None]:
        """``{curve: value}`` for STABILITY_CURVES; None where there is nothing to measure."""
        return {
            "grad_norm": float(self._grad_sum) / self._grad_steps if self._grad_steps else None,
            "flip_rate": self._flip_rate(model),
            "oscillation": self._oscillation.rate if self._oscillation is not None else None,
        }

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
