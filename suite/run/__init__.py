"""One training run: RunConfig -> Lightning fit -> RunResult in a run directory.

    from suite.run import RunConfig, train
    result = train(RunConfig(model="cnn", precision="2.32"), "runs/try")

Modules: config (RunConfig, every knob, validated on construction), result (the RunResult
fields, written once as result.json), module (the LightningModules: one shared step), callbacks
(per-epoch curves), stability (per-run stability numbers from the curves), tracking (W&B), train
(prepare, fit, finish).

Names load their modules on first use, so ``from suite.run import RunConfig`` does not import
Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "config", "RunConfig": "config", "train": "train", "load_trained": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'suite.run' has no attribute {name!r}")
    return getattr(importlib.import_module(f"suite.run.{_EXPORTS[name]}"), name)
