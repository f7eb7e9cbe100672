"""DeviceLoader: full coverage per epoch, reshuffled per epoch, reproducible, restartable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from suite.data import DeviceLoader, load_dataset, make_augment
from suite.data.images import channel_stats, normalise


def make(n=103, **kwargs) -> DeviceLoader:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    y = torch.arange(n)
    kwargs.setdefault("shuffle", True)
    kwargs.setdefault("seed", 0)
    return DeviceLoader(x, y, 10, **kwargs)


def epoch_order(loader: DeviceLoader) -> list[int]:
    return [i for _, yb in loader for i in yb.tolist()]


def test_every_example_once_per_epoch_and_epochs_differ():
    loader = make()
    assert len(loader) == 11
    first, second = epoch_order(loader), epoch_order(loader)
    assert sorted(first) == sorted(second) == list(range(103))
    assert first != second
    assert [len(yb) for _, yb in loader][-1] == 3  # the last, short batch is kept


def test_reproducible_for_a_seed_and_different_across_seeds():
    a, b, c = make(seed=7), make(seed=7), make(seed=8)
    assert [epoch_order(a) for _ in range(3)] == [epoch_order(b) for _ in range(3)]
    assert epoch_order(make(seed=7)) != epoch_order(c)


def test_restart_midway_and_explicit_epochs():
    loader = make()
    iter(loader)  # a bare iter() (an iterability probe) claims no epoch
    assert loader.state_dict() == {"epoch": 0}
    it = iter(loader)
    next(it)  # abandon epoch 0 after one batch
    assert sorted(epoch_order(loader)) == list(range(103))  # epoch 1 is whole
    loader.set_epoch(1)
    again = epoch_order(loader)
    fresh = make()
    fresh.load_state_dict({"epoch": 1})
    assert epoch_order(fresh) == again
    assert fresh.state_dict() == {"epoch": 2}


def test_no_shuffle_and_drop_last():
    plain = make(shuffle=False)
    assert epoch_order(plain) == list(range(103))
    dropped = make(drop_last=True)
    assert len(dropped) == 10
    assert all(len(yb) == 10 for _, yb in dropped)
    with pytest.raises(ValueError, match="rows"):
        DeviceLoader(torch.zeros(3), torch.zeros(4), 2, shuffle=False, seed=0)


def test_augmented_batches_keep_labels_with_their_images():
    # Constant images stay constant under shifts and flips, so the pixel names the example.
    loader = make(augment=make_augment("standard", "natural"))
    for xb, yb in loader:
        assert xb.shape == (len(yb), 1, 4, 4)
        assert torch.equal(xb[:, 0, 0, 0].long(), yb)
    digits = load_dataset("digits")
    aug = DeviceLoader(digits.train_x, digits.train_y, 64, shuffle=True, seed=0,
                       augment=make_augment("standard", "digit"))  # fmt: skip
    plain = DeviceLoader(digits.train_x, digits.train_y, 64, shuffle=True, seed=0)
    (xa, ya), (xp, yp) = next(iter(aug)), next(iter(plain))
    assert torch.equal(ya, yp)
    assert not torch.equal(xa, xp)


def test_to_moves_once_and_returns_self():
    loader = make()
    assert loader.to("cpu") is loader
    assert loader.device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_batches_and_augmentation_stay_on_device():
    loader = make(augment=make_augment("strong", "natural")).to("cuda")
    xb, yb = next(iter(loader))
    assert xb.is_cuda
    assert yb.is_cuda
    assert sorted(epoch_order(loader)) == list(range(103))


def uint8_images(n=37, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, 3, 6, 6), dtype=np.uint8)), torch.arange(n)


def test_uint8_images_normalised_per_batch_equal_the_float_splits_bit_for_bit():
    x, y = uint8_images()
    mean, std = channel_stats(x.numpy())
    as_float = normalise(x.numpy(), mean, std)
    norm = (tuple(mean), tuple(std))
    for kwargs in ({}, {"augment": make_augment("strong", "natural")}, {"shard": (1, 2)}):
        a = DeviceLoader(as_float, y, 8, shuffle=True, seed=3, **kwargs)
        b = DeviceLoader(x, y, 8, shuffle=True, seed=3, pixel_norm=norm, **kwargs)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert xb.dtype == torch.float32
            assert torch.equal(xa, xb) and torch.equal(ya, yb), kwargs


@pytest.mark.parametrize("kwargs", [{"shuffle": True}, {"shuffle": False},
                                    {"shuffle": True, "augment": "standard", "shard": (0, 2)}])
def test_streamed_batches_equal_resident_ones_and_outlive_the_next_batches(kwargs):
    x, y = uint8_images(45)
    mean, std = channel_stats(x.numpy())
    if "augment" in kwargs:
        kwargs = {**kwargs, "augment": make_augment(kwargs["augment"], "natural")}
    make_one = lambda: DeviceLoader(x.clone(), y.clone(), 8, seed=1,  # noqa: E731
                                    pixel_norm=(tuple(mean), tuple(std)), **kwargs)
    resident, streamed = make_one().to("cpu"), make_one().stream_to("cpu")
    assert streamed.streaming and not resident.streaming
    assert streamed.device == torch.device("cpu")
    for _ in range(2):  # two epochs: a new order each, the stager's two buffers reused
        kept = list(streamed)  # every batch held while later ones are gathered
        expected = list(resident)
        assert len(kept) == len(expected) == len(resident)
        for (xa, ya), (xb, yb) in zip(expected, kept, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_streaming_to_a_gpu_copies_through_pinned_buffers_and_matches_resident_batches():
    x, y = uint8_images(45)
    mean, std = channel_stats(x.numpy())
    kwargs = {"seed": 1, "shuffle": True, "pixel_norm": (tuple(mean), tuple(std)),
              "augment": make_augment("standard", "natural")}
    resident = DeviceLoader(x, y, 8, **kwargs).to("cuda")
    streamed = DeviceLoader(x, y, 8, **kwargs).stream_to("cuda")
    assert not streamed.x.is_cuda and not streamed.x.is_pinned()  # the data stays as it was
    kept = list(streamed)
    for (xa, ya), (xb, yb) in zip(resident, kept, strict=True):
        assert xb.is_cuda and yb.is_cuda
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
