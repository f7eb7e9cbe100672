"""Turn integer images into normalised DataSplits: hold-out, stats, normalisation, subset."""

from __future__ import annotations

import numpy as np
import torch

from suite.data.splits import DataSplits, make_splits, per_class_subset, stratified_holdout

# Seeds of the fixed splits: independent of the run seed, so every run sees the same val/test.
SPLIT_SEED = 20_250_212


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of integer images (N, C, H, W), via value histograms.

    Counting values instead of summing floats makes the statistics independent of summation
    order, hence bit-identical on every machine, and needs no float copy of the data.
    """
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel()).astype(np.float64)
        values = np.arange(len(counts), dtype=np.float64)
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = (counts * (values - mean) ** 2).sum() / n
        means.append(mean)
        stds.append(max(np.sqrt(var), 1e-8))
    return np.array(means), np.array(stds)


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """float32 (x - mean) / std per channel."""
    # np.require copies only a read-only or strided input (np.frombuffer), which torch refuses
    return normalise_batch(torch.from_numpy(np.require(x, requirements=["C", "W"])),
                           pixel_stats(mean, std))


def pixel_stats(mean: np.ndarray | tuple[float, ...],
                std: np.ndarray | tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (1, C, 1, 1) mean and std, as normalise_batch takes them."""
    return (torch.as_tensor(np.asarray(mean), dtype=torch.float32).view(1, -1, 1, 1),
            torch.as_tensor(np.asarray(std), dtype=torch.float32).view(1, -1, 1, 1))


def normalise_batch(x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """float32 (x - mean) / std per channel of integer or float images (N, C, H, W).

    The one definition of the normalisation: the float splits are made with it at load time, and
    a loader over uint8 images applies it to each batch on the device, with the same float32
    operations in the same order, so both give the same values bit for bit."""
    mean, std = (s.to(x.device) for s in stats)
    out = x.to(torch.float32, copy=True)
    out -= mean
    out /= std
    return out


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(y, dtype=np.int64))  # a writable copy


def build_image_splits(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    val: int | float,
    num_classes: int,
    image_kind: str,
    subset: int | None,
    seed: int,
) -> DataSplits:
    """Hold `val` out of `train` (stratified, SPLIT_SEED), normalise all splits with the
    train part's channel stats, then keep `subset` examples per class of train (run `seed`).

    Stats come from the whole train part, before any subset, so a subset's tensors are exactly
    rows of the full run's tensors.
    """
    x_all, y_all = train
    held = stratified_holdout(y_all, val, SPLIT_SEED)
    x_tr, y_tr = x_all[~held], y_all[~held]
    mean, std = channel_stats(x_tr)
    if subset is not None:
        keep = per_class_subset(y_tr, subset, seed)
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    x_te, y_te = test
    tensors = {
        "train_x": normalise(x_tr, mean, std),
        "train_y": _labels(y_tr),
        "val_x": normalise(x_all[held], mean, std),
        "val_y": _labels(y_all[held]),
        "test_x": normalise(x_te, mean, std),
        "test_y": _labels(y_te),
    }
    return make_splits(
        name,
        "image",
        tensors,
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_all.shape[1:]),
        image_kind=image_kind,
    )
