"""The contract of a user's loader (suite/data/user.py): what it may return, what the runs get,
and each broken result refused with a message saying what is wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from suite.data import load_dataset
from suite.data.errors import DatasetError
from suite.data.names import _USER, register_dataset


@pytest.fixture
def registered():
    """Register loaders under test names; unregistered afterwards."""
    names: list[str] = []

    def register(loader, task=None) -> str:
        name = f"test-data-{len(names)}"
        register_dataset(name, loader, task=task)
        names.append(name)
        return name

    yield register
    for name in names:
        _USER.pop(name, None)


def _images(n: int = 12, classes: int = 3, side: int = 2):
    y = np.arange(n) % classes
    x = np.arange(n * side * side, dtype=np.float64).reshape(n, 1, side, side)
    return x, y


def test_images_as_given_with_a_seeded_subset_per_class(registered) -> None:
    def loader(n=12):
        x, y = _images(n)
        return {"task": "image", "train": (torch.from_numpy(x), torch.from_numpy(y)),
                "val": _images(6), "test": (x[:3].tolist(), y[:3].tolist())}

    name = registered(loader)
    full = load_dataset(name, dataset_args={"n": 12})
    assert full.task == "image" and full.input_shape == (1, 2, 2) and full.num_classes == 3
    assert full.train_x.dtype == torch.float32 and full.image_kind == "natural"
    assert torch.equal(full.train_x, torch.from_numpy(_images(12)[0]).float())  # not normalised
    part = load_dataset(name, dataset_args={"n": 12}, subset=2, seed=5)
    assert torch.bincount(part.train_y).tolist() == [2, 2, 2]
    assert part.checksum == load_dataset(name, dataset_args={"n": 12}, subset=2, seed=5).checksum
    assert len(part.val_y) == 6 and len(part.test_y) == 3  # val and test never cut


def test_text_streams_are_cut_into_windows_of_block_size(registered) -> None:
    ids = np.arange(41) % 5
    name = registered(lambda: {"train": ids, "val": ids[:9], "test": ids[:9], "vocab_size": 5},
                      task="text")
    data = load_dataset(name, block_size=4, subset=3)
    assert data.task == "text" and data.input_shape == (4,) and data.num_classes == 5
    assert data.train_x.shape == (3, 4) and torch.equal(data.train_y, (data.train_x + 1) % 5)
    assert data.val_x.shape == (2, 4)


@pytest.mark.parametrize(("result", "says"), [
    ({"train": _images(), "val": _images(), "test": _images()}, "task=None"),
    ({"task": "image", "train": _images(), "val": _images()}, "lacks the split(s) test"),
    ({"task": "image", "train": _images(), "val": _images(), "test": _images(side=3)},
     "differ in shape"),
    ({"task": "image", "train": _images(), "val": _images(), "test": _images(), "num_classes": 2},
     "outside 0 .. num_classes - 1 = 1"),
    ({"task": "image", "train": (np.full((2, 1, 2, 2), np.nan), np.zeros(2, int)),
      "val": _images(), "test": _images()}, "NaN"),
    ({"task": "image", "train": (np.zeros((2, 1, 2, 2)), np.zeros(2)), "val": _images(),
      "test": _images()}, "the train labels must hold integers"),
    ({"task": "image", "train": _images(), "val": _images(), "test": _images(),
      "image_kind": "xray"}, "image_kind='xray'"),
    ({"task": "text", "train": [0, 1, 9], "val": [0, 1], "test": [0, 1], "vocab_size": 5},
     "outside 0 .. vocab_size - 1 = 4"),
])
def test_a_broken_result_is_refused_saying_what_is_wrong(registered, result, says) -> None:
    with pytest.raises(DatasetError, match=re.escape(says)):
        load_dataset(registered(lambda: result))
