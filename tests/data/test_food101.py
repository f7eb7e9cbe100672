"""Food-101 from a real tar.gz of real JPEGs in the official layout, over HTTP from loopback."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from suite.data import DatasetError, DeviceLoader, load_dataset, sources
from suite.data.sources import RemoteFile

SIZE = 16
# conftest's trees: 3 classes x (10 train + 3 test) images; val = a tenth of train, 1 per class.
N_TRAIN, N_TEST = 30, 9


def meta_ids(root: Path, split: str) -> list[str]:
    return (root / "meta" / f"{split}.txt").read_text().split()


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def registry_hash(monkeypatch, sha256: str) -> None:
    entry = (RemoteFile("food-101.tar.gz", (), sha256=sha256),)
    monkeypatch.setitem(sources.REMOTE_FILES, "food101", entry)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached(sandbox: Path, part: str) -> torch.Tensor:
    blob = torch.load(sandbox / "food101" / "decoded" / f"{part}-{SIZE}px.pt", weights_only=True)
    return blob["x"]


def assert_colours(x: torch.Tensor, ids: list[str], colours: dict[str, np.ndarray]) -> None:
    """Each decoded image's outer quarters carry its left and right colours (JPEG error aside)."""
    q = SIZE // 4
    for image, image_id in zip(x, ids, strict=True):
        left = image[:, :, :q].double().mean(dim=(1, 2)).numpy()
        right = image[:, :, -q:].double().mean(dim=(1, 2)).numpy()
        np.testing.assert_allclose(left, colours[image_id][0], atol=6, err_msg=image_id)
        np.testing.assert_allclose(right, colours[image_id][1], atol=6, err_msg=image_id)


def test_download_extract_decode_and_cache(served, sandbox):
    splits = load_dataset("food101", image_size=SIZE)
    root = sandbox / "food101" / "food-101"
    assert served.server.requests == ["/food101/food-101.tar.gz"]
    assert names(sandbox / "food101") == ["decoded", "food-101", "food-101.tar.gz"]  # no temp left
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (N_TRAIN - 3, 3, N_TEST)
    assert splits.input_shape == (3, SIZE, SIZE)
    assert splits.train_x.shape == (N_TRAIN - 3, 3, SIZE, SIZE)
    assert splits.train_x.dtype == torch.uint8  # normalised per batch on the device
    assert (splits.num_classes, splits.image_kind, splits.task) == (3, "natural", "image")
    assert sorted(splits.val_y.tolist()) == [0, 1, 2]  # stratified: one per class
    test_ids = meta_ids(root, "test")
    classes = meta_ids(root, "classes")
    assert splits.test_y.tolist() == [classes.index(i.split("/")[0]) for i in test_ids]
    # The cache holds the decoded uint8 pixels, the splits hold them as they are, and a loader
    # yields them normalised by train's exact per-channel stats.
    raw_test = cached(sandbox, "test")
    assert raw_test.dtype == torch.uint8 and raw_test.shape == (N_TEST, 3, SIZE, SIZE)
    assert_colours(raw_test, test_ids, served.food101)
    assert torch.equal(splits.test_x, raw_test)
    raw_train = cached(sandbox, "train").double()
    mean = raw_train.mean(dim=(0, 2, 3))
    std = raw_train.std(dim=(0, 2, 3), correction=0)
    assert np.allclose(splits.pixel_norm, (mean.numpy(), std.numpy()), rtol=1e-12)
    loader = DeviceLoader(splits.test_x, splits.test_y, 4, shuffle=False, seed=0,
                          pixel_norm=splits.pixel_norm)
    batches = torch.cat([xb for xb, _ in loader])
    assert batches.dtype == torch.float32
    expect = (raw_test.double() - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    assert torch.allclose(batches.double(), expect, atol=1e-5)

    # A second load reads the cache: no request, and no image is opened (there are none left).
    shutil.rmtree(root / "images")
    again = load_dataset("food101", image_size=SIZE)
    assert again.checksum == splits.checksum
    # and maps the cache file rather than reading it into memory: a data set larger than the
    # host's memory still loads, and streaming copies only batches out of it
    maps = Path("/proc/self/maps").read_text()
    assert all(str(sandbox / "food101" / "decoded" / f"{part}-{SIZE}px.pt") in maps
               for part in ("train", "val", "test"))
    assert len(served.server.requests) == 1


def test_subset_keeps_n_per_class_and_is_cached_per_seed(served, sandbox):
    full = load_dataset("food101", image_size=SIZE)
    a = load_dataset("food101", image_size=SIZE, subset=2, seed=1)
    b = load_dataset("food101", image_size=SIZE, subset=2, seed=2)
    assert torch.bincount(a.train_y).tolist() == [2, 2, 2]
    for part in (a, b):  # val and test are never cut
        assert torch.equal(part.val_y, full.val_y) and torch.equal(part.test_y, full.test_y)
    assert names(sandbox / "food101" / "decoded") == [f"{p}-{SIZE}px.pt" for p in
                       ("test", "train", "train-subset2-seed1", "train-subset2-seed2", "val")]
    assert not torch.equal(cached(sandbox, "train-subset2-seed1"), cached(sandbox, "train-subset2-seed2"))
    assert load_dataset("food101", image_size=SIZE, subset=2, seed=1).checksum == a.checksum


def test_pre_extracted_tree_is_used_as_it_is(sandbox, food101_tree):
    # No archive anywhere and downloads pointed at a closed port (the sandbox's mirror).
    colours = food101_tree(sandbox / "food101" / "food-101", np.random.default_rng(3))
    splits = load_dataset("food101", image_size=SIZE, download=False)
    assert len(splits.test_y) == N_TEST
    assert not (sandbox / "food101" / "food-101.tar.gz").exists()
    assert_colours(cached(sandbox, "test"), meta_ids(sandbox / "food101" / "food-101", "test"), colours)


def test_missing_or_corrupt_listed_image_is_refused(sandbox, food101_tree):
    root = sandbox / "food101" / "food-101"
    food101_tree(root, np.random.default_rng(4))
    first = root / "images" / f"{meta_ids(root, 'test')[1]}.jpg"
    first.unlink()
    (root / "images" / f"{meta_ids(root, 'test')[2]}.jpg").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("food101", image_size=SIZE, download=False)
    assert str(first) in str(err.value)  # the first missing one, named with its list
    assert "meta/test.txt" in str(err.value) and "extract" in str(err.value)
    assert not (sandbox / "food101" / "decoded").exists()  # checked before any decode

    shutil.rmtree(root)
    food101_tree(root, np.random.default_rng(4))
    bad = root / "images" / f"{meta_ids(root, 'train')[0]}.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DatasetError, match=f"cannot decode {bad}"):
        load_dataset("food101", image_size=SIZE, download=False)


def test_corrupt_archive_is_refused_and_leaves_no_tree(served, sandbox, monkeypatch):
    archive = served.server.root / "food101" / "food-101.tar.gz"
    good = archive.read_bytes()
    archive.write_bytes(good[: len(good) // 2] + bytes(len(good) - len(good) // 2))
    # Served bytes that do not match the registry's checksum never reach the cache.
    registry_hash(monkeypatch, "0" * 64)
    with pytest.raises(DatasetError, match="sha256 mismatch for food-101.tar.gz"):
        load_dataset("food101", image_size=SIZE)
    assert not (sandbox / "food101" / "food-101.tar.gz").exists()
    # A corrupt archive whose checksum the registry does hold fails to extract, and leaves no
    # half-extracted tree a later load could take for the real one.
    registry_hash(monkeypatch, sha256_of(archive))
    with pytest.raises(DatasetError, match=r"cannot extract .*food-101\.tar\.gz.*download it again"):
        load_dataset("food101", image_size=SIZE)
    assert names(sandbox / "food101") == ["food-101.tar.gz"]


def test_archive_without_the_layout_is_refused(served, sandbox, monkeypatch, tmp_path):
    archive = served.server.root / "food101" / "food-101.tar.gz"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("not food")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "other", arcname="other")
    registry_hash(monkeypatch, sha256_of(archive))
    with pytest.raises(DatasetError, match="no food-101/meta/ folder"):
        load_dataset("food101", image_size=SIZE)
    assert names(sandbox / "food101") == ["food-101.tar.gz"]


def test_offline_without_files_says_both_ways_to_provide_them(sandbox):
    with pytest.raises(DatasetError) as err:
        load_dataset("food101", download=False)
    message = str(err.value)
    assert "food-101.tar.gz" in message and "download=True" in message
    assert str(sandbox / "food101" / "food-101" / "meta") in message


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("cifar10", {"image_size": 64}, "image_size=64 applies only to food101"),
        ("food101", {"image_size": 0}, "image_size=0 must be a positive integer"),
        ("food101", {"tokenizer": "wordpiece"}, "applies only to the text corpora"),
    ],
)
def test_options_a_dataset_cannot_use_are_refused(name, options, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset(name, download=False, **options)


@pytest.mark.slow
def test_trains_on_its_uint8_images_resident_or_streamed_alike_in_its_layout(sandbox, food101_tree, tmp_path,
                                                             capfd):
    import torch.nn.functional as F

    from suite.pack.rundir import load_packed_model
    from suite.run.config import RunConfig
    from suite.run.train import load_trained, train

    food101_tree(sandbox / "food101" / "food-101", np.random.default_rng(5))
    config = RunConfig(model="cnn", dataset="food101", image_size=SIZE, precision="2.32",
                       width=0.25, epochs=2, batch_size=8, augment="standard",
                       wandb_mode="disabled", device="cpu")
    resident = train(config, tmp_path / "resident")
    assert "bitsweep: data:" not in capfd.readouterr().err  # a CPU run in auto says nothing
    streamed = train(config.replace(data_placement="stream"), tmp_path / "streamed")
    assert "data: 0.00 GiB; streamed from host memory" in capfd.readouterr().err
    assert (resident["data_placement"], streamed["data_placement"]) == ("device", "stream")
    same = {"fit_seconds", "data_placement", "git_commit", "packed_bytes", "packed_compression",
            "packed_ratio"}  # the packed header holds the config, data_placement with it
    assert {k: v for k, v in streamed.items() if k not in same} == \
        {k: v for k, v in resident.items() if k not in same}
    weights = [(tmp_path / d / "model.safetensors").read_bytes() for d in ("resident", "streamed")]
    assert weights[0] == weights[1]  # the same trained weights, bit for bit
    assert resident["test_acc"] is not None and 0 <= resident["test_acc"] <= 1

    # colour images on a CPU: the CNN ran channels_last (suite/run/layout.py); what it saved is
    # plain, so the rebuilt model, and the one unpacked from model.bsw, give its test loss again
    assert resident["memory_format"] == "channels_last"
    splits = load_dataset("food101", image_size=SIZE)
    x = DeviceLoader(splits.test_x, splits.test_y, 64, shuffle=False, seed=0,
                     pixel_norm=splits.pixel_norm)
    for model in (load_trained(tmp_path / "resident"),
                  load_packed_model(tmp_path / "resident" / "model.bsw")):
        with torch.no_grad():
            loss = sum(float(F.cross_entropy(model.eval()(xb), yb, reduction="sum")) for xb, yb in x)
        assert loss / len(splits.test_y) == pytest.approx(resident["test_loss"], rel=1e-4)
    plain = train(config.replace(memory_format="contiguous"), tmp_path / "plain")
    assert plain["memory_format"] == "contiguous"
    assert plain["val_loss"] == pytest.approx(resident["val_loss"], rel=1e-3)  # rounding only
