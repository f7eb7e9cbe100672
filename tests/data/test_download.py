"""Downloads over real HTTP from a loopback server, into the real formats' readers."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from suite.data import DatasetError, load_dataset, sources
from suite.data.cifar import read_cifar10
from suite.data.idx import parse_idx, read_idx
from suite.data.sources import RemoteFile


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def correlated(a: torch.Tensor, b: np.ndarray) -> bool:
    """True when normalised `a` is an increasing affine map of raw `b` (same images, in order)."""
    return np.corrcoef(a.numpy().ravel(), b.astype(np.float64).ravel())[0, 1] > 0.99999


def test_mnist_download_parses_to_the_served_images(served, sandbox):
    splits = load_dataset("mnist", subset=None)
    train_y = served.mnist["train-labels-idx1-ubyte.gz"]
    assert splits.train_x.shape == (110, 1, 28, 28)
    assert splits.val_x.shape == (10, 1, 28, 28)
    assert splits.test_x.shape == (20, 1, 28, 28)
    assert splits.train_x.dtype == torch.float32
    assert splits.test_y.tolist() == served.mnist["t10k-labels-idx1-ubyte.gz"].tolist()
    assert correlated(splits.test_x, served.mnist["t10k-images-idx3-ubyte.gz"])
    # val is a stratified slice of train: one per class here, and train + val = all of train.
    assert sorted(splits.val_y.tolist()) == list(range(10))
    assert sorted(splits.train_y.tolist() + splits.val_y.tolist()) == sorted(train_y.tolist())
    assert splits.image_kind == "digit"
    assert splits.input_shape == (1, 28, 28)
    cached = [p.name for p in files_under(sandbox)]
    assert sorted(cached) == sorted(served.mnist)  # final files only, no .part left

    fetched = len(served.server.requests)
    assert fetched == 4
    again = load_dataset("mnist")  # from the verified cache: no new request
    assert len(served.server.requests) == fetched
    assert again.checksum == splits.checksum


def test_cifar10_download_parses_pickled_batches(served):
    splits = load_dataset("cifar10")
    assert splits.train_x.shape == (45, 3, 32, 32)
    assert splits.val_x.shape == (5, 3, 32, 32)
    assert splits.test_y.tolist() == served.cifar["test_y"].tolist()
    for c in range(3):  # each channel is its own affine map of the raw bytes
        assert correlated(splits.test_x[:, c], served.cifar["test_x"][:, c])
    assert splits.image_kind == "natural"
    assert splits.num_classes == 10


def test_text_downloads_tokenise_to_shifted_windows(served):
    shakespeare = load_dataset("tinyshakespeare", block_size=16)
    assert shakespeare.task == "text"
    assert shakespeare.input_shape == (16,)
    assert torch.equal(shakespeare.train_x[:, 1:], shakespeare.train_y[:, :-1])
    assert shakespeare.train_x.dtype == torch.int64
    decoded = "".join(shakespeare.vocab[i] for i in shakespeare.train_x[0])
    assert decoded == "First Citizen:\nB"

    wiki = load_dataset("wikitext2", block_size=8)
    assert "\x1a" in wiki.vocab  # "ō" is outside printable ASCII: mapped to the fallback char
    assert (
        len(wiki.val_x)
        == (len(" = Homarus gammarus = \n Homarus gammarus is a lobster .\n") * 8 - 1) // 8
    )


def test_every_downloadable_dataset_comes_over_http(served, sandbox, monkeypatch):
    from suite.data import DATASETS, EMBEDDED

    assert set(served.downloadable) == set(DATASETS) - set(EMBEDDED)  # a new dataset needs a file here
    monkeypatch.setattr("suite.data.paths.SYSTEM_DATA_DIRS", ())  # not Debian's Fashion-MNIST
    for name in served.downloadable:
        splits = load_dataset(name, block_size=8)
        assert len(splits.train_y) and len(splits.val_y) and len(splits.test_y), name
        assert (sandbox / name).is_dir(), name
        assert any(r.startswith(f"/{name}/") for r in served.server.requests), name
    assert load_dataset("fashion-mnist").image_kind == "natural"


def test_wrong_checksum_names_both_and_leaves_nothing(served, sandbox, monkeypatch):
    expected = "0" * 64
    real = hashlib.sha256((served.server.root / "cifar10/cifar-10-python.tar.gz").read_bytes())
    monkeypatch.setitem(
        sources.REMOTE_FILES,
        "cifar10",
        (RemoteFile("cifar-10-python.tar.gz", (), sha256=expected),),
    )
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10")
    assert expected in str(err.value)
    assert real.hexdigest() in str(err.value)
    assert files_under(sandbox) == []


def test_interrupted_transfer_fails_and_leaves_nothing(served, sandbox, monkeypatch):
    monkeypatch.setenv("BITSWEEP_DATA_MIRROR", served.server.url + "/truncated")
    with pytest.raises(DatasetError, match="cut off"):
        load_dataset("cifar10")
    assert any(r.startswith("/truncated/cifar10/") for r in served.server.requests)
    assert files_under(sandbox) == []


def test_connection_refused_is_a_dataset_error(sandbox, monkeypatch):
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BITSWEEP_DATA_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(DatasetError, match="could not download") as err:
        load_dataset("tinyshakespeare")
    assert "without the network" in str(err.value)
    assert files_under(sandbox) == []


def test_corrupt_cached_file_is_refused_not_used(served, sandbox):
    load_dataset("tinyshakespeare")
    (sandbox / "tinyshakespeare" / "input.txt").write_text("something else")
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        load_dataset("tinyshakespeare")


def test_offline_missing_dataset_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr("suite.data.paths.SYSTEM_DATA_DIRS", (tmp_path / "no-system",))
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", download=False)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "BITSWEEP_DATA_DIR" in message
    assert "download=True" in message


def test_user_placed_files_in_data_dir_are_found(served, tmp_path):
    own = tmp_path / "own"
    (own / "mnist").mkdir(parents=True)
    for f in (served.server.root / "mnist").iterdir():
        (own / "mnist" / f.name).write_bytes(f.read_bytes())
    splits = load_dataset("mnist", data_dir=own, download=False)
    assert len(splits.test_y) == 20
    assert served.server.requests == []


def test_idx_parser_rejects_corrupt_files(tmp_path):
    good = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + b"\x01\x02\x03"
    assert parse_idx(good).tolist() == [1, 2, 3]
    with pytest.raises(DatasetError, match="magic"):
        parse_idx(b"\x1f\x8b" + good[2:])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        parse_idx(good[:-1])
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(good)[:-6])  # cut off inside the gzip trailer
    with pytest.raises(DatasetError, match="corrupt"):
        read_idx(path)


def test_cifar_reader_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "cifar-10-python.tar.gz"
    raw = pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2)
    with tarfile.open(path, "w:gz") as tar:
        for member in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(DatasetError, match=r"\.print is not allowed"):
        read_cifar10(path)


def test_system_dirs_are_trusted_for_idx_but_not_for_pickles(served, monkeypatch, tmp_path):
    system = tmp_path / "usr-share-datasets"
    for name in ("mnist", "cifar10"):
        (system / name).mkdir(parents=True)
        for f in (served.server.root / name).iterdir():
            (system / name / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr("suite.data.paths.SYSTEM_DATA_DIRS", (system,))
    for name in ("mnist", "cifar10"):  # checksums that no file matches
        bogus = tuple(RemoteFile(r.filename, (), md5="f" * 32) for r in sources.REMOTE_FILES[name])
        monkeypatch.setitem(sources.REMOTE_FILES, name, bogus)
    assert len(load_dataset("mnist", download=False).test_y) == 20  # IDX: format-checked only
    with pytest.raises(DatasetError, match="md5 mismatch"):
        load_dataset("cifar10", download=False)  # pickles: verified wherever they come from
    assert served.server.requests == []
