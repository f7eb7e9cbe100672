"""Weight oscillation: the level-by-level restlessness of quantisation-aware training.

Nagel et al. 2022 ("Overcoming Oscillations in Quantization-Aware Training", ICML; their
reference code tracks it the same way) observe that with the straight-through estimator a
latent weight near a decision threshold keeps crossing it: its integer level goes up one step and
straight back down. A weight *oscillates* at a step when its level moves against its previous
move (the last step at which it moved at all): +1 then -1, or -1 then +1, with any number of
still steps in between. A move after a move the same way is progress, not oscillation.

``OscillationTracker`` keeps, per quantised tensor, the level at the previous step and the
direction of the last move, on the tensor's device. Per step it counts the oscillating weights
of all tensors and folds their share into an exponential moving average (momentum 0.01, as in
the reference code) without a host sync; ``rate`` reads it once. The EMA is bias-corrected as
Adam's moments are (divided by 1 - (1 - m)^t): starting from zero, a 48-step run would otherwise
read a third of the rate a 500-step run with the same per-step share reads. The mean over weights
of Nagel et al.'s per-weight EMA equals this EMA of the per-step share, so the numbers compare.

It costs one level computation of every quantised tensor per step (the same as the forward's
quantisation), so it is an option (``RunConfig.track_oscillation``) that stability studies turn
on; bench/bench_oscillation.py measures the cost.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

MOMENTUM = 0.01


class OscillationTracker:
    """Feed it each step's integer levels (``update``); ``rate`` is the bias-corrected EMA of
    the share of weights that oscillated, None before two steps have been seen."""

    def __init__(self, momentum: float = MOMENTUM) -> None:
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum={momentum!r}: must be in (0, 1]")
        self.momentum = momentum
        self._prev: dict[str, torch.Tensor] = {}
        self._last_move: dict[str, torch.Tensor] = {}
        self._ema: torch.Tensor | None = None
        self._steps = 0  # steps folded into the EMA (each after the first one seen)

    def update(self, levels: Mapping[str, torch.Tensor]) -> None:
        """One training step's levels: {tensor name: integer level indices}."""
        if not levels:
            return
        if not self._prev:
            self._prev = {k: v.detach().to(torch.int16) for k, v in levels.items()}
            self._last_move = {k: torch.zeros_like(v) for k, v in self._prev.items()}
            return
        oscillated, total = None, 0
        for key, now in levels.items():
            now = now.detach().to(torch.int16)
            move = torch.sign(now - self._prev[key])
            last = self._last_move[key]
            count = (move * last == -1).sum()
            oscillated = count if oscillated is None else oscillated + count
            total += now.numel()
            # a weight that stood still keeps the direction of its last move
            self._last_move[key] = torch.where(move != 0, move, last)
            self._prev[key] = now
        share = oscillated.float() / total
        m = self.momentum
        self._ema = share * m if self._ema is None else self._ema * (1 - m) + share * m
        self._steps += 1

    @property
    def rate(self) -> float | None:
        if self._ema is None:
            return None
        return float(self._ema) / (1 - (1 - self.momentum) ** self._steps)
