"""Stability of one run, from its per-epoch curves.

The papers' claims are about stability, so each is a number here:
- ``loss_spikes``: epochs whose val loss rose more than ``SPIKE_RISE`` (10%) over the previous epoch;
- ``max_val_acc_drop``: the largest fall of val accuracy from one epoch to the next (>= 0);
- ``final_minus_best``: final val accuracy minus the best one (<= 0; how much was given back);
- ``diverged``: a NaN/inf loss or a loss above the run's bound (recorded by the training step);
- ``oscillation`` / ``max_oscillation``: the last and the largest epoch-end oscillation rate
  (suite.run.oscillation), when it was tracked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

SPIKE_RISE = 0.10


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def stability(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    val_loss = [r.get("val_loss") for r in rows]
    val_acc = [r.get("val_acc") for r in rows]
    spikes = 0
    for prev, cur in zip(val_loss, val_loss[1:]):
        if prev is not None and cur is not None and math.isfinite(prev) and math.isfinite(cur):
            spikes += cur > prev * (1 + SPIKE_RISE)
    drops = [a - b for a, b in zip(val_acc, val_acc[1:])
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    accs = _finite(val_acc)
    best = max(accs) if accs else None
    best_epoch = None
    if best is not None:
        best_epoch = next(r["epoch"] for r in rows if r.get("val_acc") == best)
    final = accs[-1] if accs else None
    flips = _finite([r.get("flip_rate") for r in rows])
    grads = _finite([r.get("grad_norm") for r in rows])
    oscillation = _finite([r.get("oscillation") for r in rows])
    return {
        "loss_spikes": int(spikes),
        "max_val_acc_drop": max([0.0, *drops]),
        "best_val_acc": best,
        "best_epoch": best_epoch,
        "final_minus_best": None if best is None else final - best,
        "flip_rate": flips[-1] if flips else None,
        "flip_rate_mean": sum(flips) / len(flips) if flips else None,
        "grad_norm": grads[-1] if grads else None,
        "grad_norm_max": max(grads) if grads else None,
        "oscillation": oscillation[-1] if oscillation else None,
        "max_oscillation": max(oscillation) if oscillation else None,
    }
