"""DeviceLoader: full coverage per epoch, reshuffled per epoch, reproducible, restartable."""

from __future__ import annotations

import pytest
import torch

from suite.data import DeviceLoader, load_dataset, make_augment


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
