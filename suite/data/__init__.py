"""Datasets for bitsweep: embedded and downloadable sets as device-ready tensors, batched
augmentation, and a loader that batches straight from tensors on the training device.

    splits = load_dataset("digits")                      # DataSplits, CPU tensors
    augment = make_augment("standard", splits.image_kind)
    train = DeviceLoader(splits.train_x, splits.train_y, 128, shuffle=True, seed=0,
                         augment=augment).to("cuda")

Names load their modules on first use: ``suite.data.names`` (the datasets, their tasks and
option rules) is plain Python, so validating a RunConfig imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "make_augment": "augment",
    **dict.fromkeys(("AUGMENTATIONS", "DATASETS", "EMBEDDED", "TEXT_DATASETS", "TOKENIZERS",
                     "dataset_names", "dataset_option_error", "dataset_task", "load_request",
                     "register_dataset"), "names"),
    "load_dataset": "catalog",
    "DatasetError": "errors",
    "DeviceLoader": "loader",
    "DataSplits": "splits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'suite.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"suite.data.{_EXPORTS[name]}"), name)
