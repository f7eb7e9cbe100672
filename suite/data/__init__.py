"""Datasets for bitsweep: embedded and downloadable sets as device-ready tensors, batched
augmentation, and a loader that batches straight from tensors on the training device.

    splits = load_dataset("digits")                      # DataSplits, CPU tensors
    augment = make_augment("standard", splits.image_kind)
    train = DeviceLoader(splits.train_x, splits.train_y, 128, shuffle=True, seed=0,
                         augment=augment).to("cuda")
"""

from suite.data.augment import AUGMENTATIONS, make_augment
from suite.data.catalog import (
    DATASETS,
    EMBEDDED,
    TEXT_DATASETS,
    TOKENIZERS,
    dataset_option_error,
    dataset_task,
    load_dataset,
)
from suite.data.errors import DatasetError
from suite.data.loader import DeviceLoader
from suite.data.splits import DataSplits

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "TEXT_DATASETS",
    "TOKENIZERS",
    "dataset_option_error",
    "dataset_task",
    "EMBEDDED",
    "DataSplits",
    "DatasetError",
    "DeviceLoader",
    "load_dataset",
    "make_augment",
]
