"""The DataSplits record every loader returns, its checksum, and seeded index splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from suite.data.errors import DatasetError

_SPLIT_KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


# eq=False: field-wise == on tensors raises; compare two loads by `checksum` instead.
@dataclass(frozen=True, eq=False, repr=False)
class DataSplits:
    """Train/val/test tensors of one dataset, on CPU, ready to hand to a DeviceLoader.

    Image: x float32 (N, C, H, W) normalised, y int64 (N,); or, with `pixel_norm` set (a data
    set whose float32 copy would be 4x too large: Food-101), x uint8 as decoded, which the
    loader normalises batch by batch on the device (images.normalise_batch). Text: x and y int64
    (N, block_size), y is x shifted by one token. `checksum` is the sha256 of the six tensors
    (dtype, shape and bytes) as loaded, so two runs can check they saw the same data.
    """

    name: str
    task: str  # "image" or "text"
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int  # classes for image; vocabulary size for text
    input_shape: tuple[int, ...]  # (C, H, W) for image; (block_size,) for text
    image_kind: str | None  # "digit" or "natural"; None for text
    checksum: str
    vocab: str | None = None  # char corpora: the characters, index = token id
    # Text: "char" or "wordpiece"; loss and perplexity are per token of this tokenizer.
    tokenizer: str | None = None
    # uint8 images: the train part's per-channel (mean, std) that normalise each batch
    pixel_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the six tensors as stored: what a device must hold to keep them resident."""
        return sum(getattr(self, k).nbytes for k in _SPLIT_KEYS)

    def __repr__(self) -> str:
        sizes = "/".join(str(len(t)) for t in (self.train_y, self.val_y, self.test_y))
        tokens = f"tokenizer={self.tokenizer}, " if self.tokenizer else ""
        return (
            f"DataSplits({self.name!r}, {self.task}, train/val/test={sizes}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, {tokens}"
            f"checksum={self.checksum[:12]}...)"
        )


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the split tensors in a fixed order, including dtype and shape."""
    digest = hashlib.sha256()
    for key in _SPLIT_KEYS:
        t = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        # A uint8 view of the storage hashes any dtype without a copy.
        digest.update(memoryview(t.view(torch.uint8).numpy() if t.numel() else b""))
    return digest.hexdigest()


def make_splits(name: str, task: str, tensors: dict[str, torch.Tensor], **meta) -> DataSplits:
    """Build a DataSplits and stamp its checksum."""
    return DataSplits(name=name, task=task, **tensors, checksum=tensors_checksum(tensors), **meta)


def stratified_holdout(y: np.ndarray, fraction_or_count: float | int, seed: int) -> np.ndarray:
    """Boolean mask of a seeded, class-stratified held-out part of `y`.

    An int takes that many examples in all, a float that fraction; each class gives its share
    (largest remainders break ties) so the held-out class mix matches the whole.
    """
    n = len(y)
    total = (
        fraction_or_count if isinstance(fraction_or_count, int) else round(n * fraction_or_count)
    )
    if not 0 < total < n:
        raise DatasetError(f"held-out size {total} must be between 1 and {n - 1}")
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * total / n
    take = np.floor(exact).astype(np.int64)
    short = total - int(take.sum())
    take[np.argsort(-(exact - take), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    for cls, k in zip(classes, take, strict=True):
        members = np.flatnonzero(y == cls)
        mask[rng.permutation(members)[:k]] = True
    return mask


def per_class_subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` seeded examples of every class (error if a class has fewer)."""
    if per_class < 1:
        raise DatasetError(f"subset={per_class} must be a positive number of examples per class")
    rng = np.random.default_rng(seed)
    picked = []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        if len(members) < per_class:
            raise DatasetError(
                f"subset={per_class} per class, but class {cls} has only {len(members)} "
                f"training examples; use subset <= {len(members)} or subset=None"
            )
        picked.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(picked))
