"""The embedded datasets load offline, identically every time, with the contracted layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from suite.data import DATASETS, EMBEDDED, DatasetError, load_dataset
from suite.data.paths import resolve_data_dir

SPLITS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


def assert_same(a, b):
    assert a.checksum == b.checksum
    for key in SPLITS:
        assert torch.equal(getattr(a, key), getattr(b, key)), key


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_loads_offline_and_identically(name):
    first = load_dataset(name, download=False)
    second = load_dataset(name, download=False, seed=123)  # the run seed never moves splits
    assert_same(first, second)
    assert len(first.checksum) == 64
    assert int(first.checksum, 16) >= 0


def test_digits_layout():
    d = load_dataset("digits")
    assert (d.task, d.image_kind, d.num_classes, d.input_shape) == ("image", "digit", 10, (1, 8, 8))
    sizes = (len(d.train_y), len(d.val_y), len(d.test_y))
    assert sum(sizes) == 1797
    assert sizes == (1078, 360, 359)
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert x.dtype == torch.float32
        assert x.shape[1:] == (1, 8, 8)
        assert y.dtype == torch.int64
        assert x.shape[0] == y.shape[0]
        assert torch.bincount(y, minlength=10).min() >= 30  # stratified: every class present
    # normalised with the train split's statistics
    assert abs(d.train_x.mean().item()) < 1e-5
    assert abs(d.train_x.std().item() - 1) < 1e-3
    assert d.vocab is None


def test_digits_split_is_pinned():
    """The seeded split is part of the benchmark: a code change that moves it is caught here
    (labels only: float normalisation may differ in the last bit across platforms)."""
    import hashlib

    d = load_dataset("digits")
    got = {k: hashlib.sha256(getattr(d, k).numpy().tobytes()).hexdigest()[:16]
           for k in ("train_y", "val_y", "test_y")}
    assert got == {"train_y": "f120ee644fcfc218", "val_y": "c6ecb092b2229451",
                   "test_y": "b7a8a29bf5422bcf"}


def test_stdlib_text_layout():
    t = load_dataset("stdlib-text", block_size=32)
    assert (t.task, t.image_kind, t.input_shape) == ("text", None, (32,))
    assert t.num_classes == len(t.vocab) <= 97
    assert set(t.vocab) >= set("def return\n")
    assert all(c == "\n" or c == "\x1a" or " " <= c <= "~" for c in t.vocab)
    for key in SPLITS:
        tensor = getattr(t, key)
        assert tensor.dtype == torch.int64
        assert tensor.shape[1] == 32
        assert tensor.min() >= 0
        assert tensor.max() < t.num_classes
    assert torch.equal(t.train_x[:, 1:], t.train_y[:, :-1])
    assert torch.equal(t.train_x[1:, 0], t.train_y[:-1, -1])  # windows tile the stream
    n = len(t.train_x) + len(t.val_x) + len(t.test_x)
    assert 0.89 < len(t.train_x) / n < 0.91  # 90/5/5 contiguous
    assert 1_000_000 <= n * 32 <= 1_500_000


def test_image_subset_is_per_class_seeded_and_reproducible():
    full = load_dataset("digits")
    a = load_dataset("digits", subset=7, seed=1)
    b = load_dataset("digits", subset=7, seed=1)
    c = load_dataset("digits", subset=7, seed=2)
    assert torch.bincount(a.train_y).tolist() == [7] * 10
    assert_same(a, b)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.checksum != c.checksum
    assert torch.equal(a.val_x, full.val_x)
    assert torch.equal(a.test_y, full.test_y)
    # a subset is rows of the full train split, normalised the same way
    rows = (a.train_x.flatten(1)[:, None] == full.train_x.flatten(1)[None]).all(-1)
    assert rows.any(1).all()
    with pytest.raises(DatasetError, match="subset=500"):
        load_dataset("digits", subset=500)


def test_text_subset_keeps_first_windows():
    full = load_dataset("stdlib-text")
    part = load_dataset("stdlib-text", subset=10)
    assert torch.equal(part.train_x, full.train_x[:10])
    assert torch.equal(part.val_x, full.val_x)


def test_unknown_name_lists_known_ones():
    with pytest.raises(DatasetError) as err:
        load_dataset("imagenet")
    assert isinstance(err.value, ValueError)
    assert all(name in str(err.value) for name in DATASETS)
    assert list(DATASETS) == sorted(DATASETS)


def test_data_dir_resolution(monkeypatch, tmp_path):
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("BITSWEEP_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("BITSWEEP_DATA_DIR")
    assert resolve_data_dir() == Path.home() / ".cache/bitsweep/data"


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_package(sandbox):
    f = load_dataset("fashion-mnist", download=False)
    assert (len(f.train_y), len(f.val_y), len(f.test_y)) == (55_000, 5_000, 10_000)
    assert f.train_x.shape[1:] == (1, 28, 28)
    assert f.image_kind == "natural"
    assert torch.bincount(f.val_y).tolist() == [500] * 10
    assert torch.bincount(f.test_y).tolist() == [1000] * 10
    assert not sandbox.exists()  # read in place, nothing copied into the cache
