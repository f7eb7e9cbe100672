"""The user's own data: a loader named by an import string or a registered name (names.py),
turned into the DataSplits every run trains on.

The contract. The loader is called with the run's ``dataset_args`` as keyword arguments and
returns a mapping (a dict, or any object with these attributes, e.g. a dataclass):

``task``         "image" or "text" (may be left out when the dataset was registered with a task)
``train``, ``val``, ``test``
    image: each a pair ``(x, y)`` of torch tensors or numpy arrays: x (N, C, H, W) numbers,
           used as given (converted to float32: normalise them in the loader), y (N,) integer
           class ids in 0 .. num_classes - 1; every split with the same (C, H, W).
    text:  each a 1-D integer token stream (tensor, array or list) with ids in
           0 .. vocab_size - 1; bitsweep cuts it into non-overlapping windows of ``block_size``
           tokens, the targets shifted by one token, as it does its own corpora.
``num_classes``  image: the number of classes (default: 1 + the largest label of any split)
``vocab_size``   text: the vocabulary size (required)
``image_kind``   image, optional: "natural" (the default) or "digit", what the augmentations
                 treat the images as (flips and reflect-padding, or shifts over the background)

``subset: n`` keeps n seeded examples per class of train (images) or its first n windows (text),
as for the built-in sets; val and test are never cut. A DataSplits may be returned as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from suite.data.errors import DatasetError
from suite.data.names import IMAGE_KINDS, registered_datasets
from suite.data.splits import DataSplits, make_splits, per_class_subset
from suite.data.text import build_token_splits
from suite.plugins import ImportFailed, import_object

SPLITS = ("train", "val", "test")


def _loader(name: str) -> Callable[..., Any]:
    registered = registered_datasets().get(name)
    if registered is not None:
        return registered.loader
    try:
        loader = import_object(name)
    except ImportFailed as err:
        raise DatasetError(str(err)) from None
    if not callable(loader):
        raise DatasetError(f"{name!r} is a {type(loader).__name__}, not a callable loader")
    return loader


def _get(result: Any, key: str, default: Any = None) -> Any:
    if isinstance(result, Mapping):
        return result.get(key, default)
    return getattr(result, key, default)


def _tensor(value: Any, what: str) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DatasetError(f"{what} is not an array ({type(value).__name__}: {err})") from None


def _integers(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise DatasetError(f"{what} must hold integers, got {t.dtype}")
    return t.to(torch.int64)


def load_user_dataset(name: str, *, dataset_args: dict[str, Any], subset: int | None = None,
                      seed: int = 0, block_size: int = 64) -> DataSplits:
    """Call user dataset ``name``'s loader and check what it returns against the contract (the
    module doc). Raises DatasetError naming what is wrong, with the loader's own error."""
    loader = _loader(name)
    try:
        result = loader(**dataset_args)
    except Exception as err:  # noqa: BLE001 - whatever the user's code raises is reported
        raise DatasetError(f"the loader raised {type(err).__name__}: {err}") from err
    if isinstance(result, DataSplits):
        return result
    registered = registered_datasets().get(name)
    task = _get(result, "task", registered.task if registered else None)
    if task not in ("image", "text"):
        raise DatasetError(f"the loader's result has task={task!r}; it must say task 'image' or "
                           "'text' (docs/extending.md)")
    missing = [s for s in SPLITS if _get(result, s) is None]
    if missing:
        raise DatasetError(f"the loader's result lacks the split(s) {', '.join(missing)}: it "
                           f"must hold {', '.join(SPLITS)}")
    if task == "text":
        return _text(name, result, subset, block_size)
    return _images(name, result, subset, seed)


def _text(name: str, result: Any, subset: int | None, block_size: int) -> DataSplits:
    vocab = _get(result, "vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)) or vocab < 2:
        raise DatasetError(f"a text loader's result must give vocab_size, an integer >= 2; got "
                           f"{vocab!r}")
    streams = []
    for split in SPLITS:
        ids = _integers(_tensor(_get(result, split), f"{split}"), f"the {split} tokens")
        if ids.ndim != 1:
            raise DatasetError(f"the {split} tokens have shape {tuple(ids.shape)}; a text split is "
                               "one 1-D token stream")
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise DatasetError(f"the {split} tokens hold ids {int(ids.min())} .. "
                               f"{int(ids.max())}, outside 0 .. vocab_size - 1 = {vocab - 1}")
        streams.append(ids.contiguous())
    return build_token_splits(name, tuple(streams), block_size, subset, num_classes=int(vocab),
                              tokenizer="user")


def _images(name: str, result: Any, subset: int | None, seed: int) -> DataSplits:
    pairs = {}
    for split in SPLITS:
        pair = _get(result, split)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DatasetError(f"the {split} split is a {type(pair).__name__}; an image split is "
                               "a pair (x, y)")
        x, y = _tensor(pair[0], f"{split} x"), _tensor(pair[1], f"{split} y")
        y = _integers(y, f"the {split} labels")
        if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or not len(x):
            raise DatasetError(f"the {split} split has x of shape {tuple(x.shape)} and y of shape "
                               f"{tuple(y.shape)}; it needs x (N, C, H, W) and y (N,), N >= 1")
        if x.dtype.is_complex or x.dtype == torch.bool:
            raise DatasetError(f"the {split} images are {x.dtype}; they must be real numbers")
        pairs[split] = (x.to(torch.float32).contiguous(), y)
    shapes = {s: tuple(x.shape[1:]) for s, (x, _) in pairs.items()}
    if len(set(shapes.values())) > 1:
        raise DatasetError(f"the splits' images differ in shape (C, H, W): {shapes}")
    classes = _get(result, "num_classes")
    top = max(int(y.max()) for _, y in pairs.values())
    if classes is None:
        classes = top + 1
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 2:
        raise DatasetError(f"num_classes={classes!r} must be an integer >= 2")
    low = min(int(y.min()) for _, y in pairs.values())
    if low < 0 or top >= classes:
        raise DatasetError(f"the labels run {low} .. {top}, outside 0 .. num_classes - 1 = "
                           f"{classes - 1}")
    kind = _get(result, "image_kind", "natural")
    if kind not in IMAGE_KINDS:
        raise DatasetError(f"image_kind={kind!r}; choose one of {', '.join(IMAGE_KINDS)}")
    for split, (x, _) in pairs.items():
        if not torch.isfinite(x).all():
            raise DatasetError(f"the {split} images hold NaN or infinite values")
    train_x, train_y = pairs["train"]
    if subset is not None:
        keep = torch.from_numpy(per_class_subset(train_y.numpy(), subset, seed))
        train_x, train_y = train_x[keep], train_y[keep]
    tensors = {"train_x": train_x, "train_y": train_y, "val_x": pairs["val"][0],
               "val_y": pairs["val"][1], "test_x": pairs["test"][0], "test_y": pairs["test"][1]}
    return make_splits(name, "image", tensors, num_classes=int(classes),
                       input_shape=shapes["train"], image_kind=kind)
