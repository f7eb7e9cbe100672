"""Sweeps: a YAML study -> an Optuna study whose trials are runs.

    from suite.sweep import load_spec, run_sweep
    run_sweep(load_spec("sweeps/default.yaml"), workers=2)

Modules: spec (the sweep file, validated whole), slots (the identity of a grid cell and its
repeats; light, the report reads it too), storage (opening a journal file or database URL),
queue (the queue of waiting trials, claims, heartbeats and locks), tuning (per-cell sampler and
pruner), progress (what a sweep prints), study (opening the study), trial (running one claimed
trial), workers (worker processes and their signals, inline or a pool), driver (a sweep from start
to summary), wandb (W&B sweep export and the agent's program).

The names below load their modules on first use: the report imports ``suite.sweep.slots`` and
``suite.sweep.storage`` and must not pay for Optuna's samplers, Lightning or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SpecError": "spec", "SweepSpec": "spec", "load_spec": "spec", "parse_spec": "spec",
    "run_sweep": "driver", "SweepInterrupted": "driver", "Progress": "progress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'suite.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(f"suite.sweep.{_EXPORTS[name]}"), name)
