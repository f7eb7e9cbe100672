"""Fixtures for the data-layer tests: a sandboxed cache, and a real HTTP server on loopback
serving small files in the real dataset formats (IDX gz, CIFAR-10 python tarball, text, zip,
the Food-101 tarball of JPEGs)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import shutil
import struct
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from suite.data import sources
from suite.data.sources import RemoteFile


@pytest.fixture(autouse=True)
def sandbox(tmp_path, monkeypatch):
    """Every test gets its own cache dir, and any download not pointed at the test server goes
    to a closed loopback port: nothing here can reach the internet."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BITSWEEP_DATA_DIR", str(cache))
    monkeypatch.setenv("BITSWEEP_DATA_MIRROR", "http://127.0.0.1:9")
    return cache


@dataclass
class LocalServer:
    root: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)


def _handler(server_state: LocalServer):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(server_state.root), **kwargs)

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            server_state.requests.append(self.path)
            if self.path.startswith("/truncated/"):
                # Announce the full length, send half, hang up: an interrupted transfer.
                body = (server_state.root / self.path.removeprefix("/truncated/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            super().do_GET()

    return Handler


@pytest.fixture
def server(tmp_path):
    state = LocalServer(root=tmp_path / "www")
    state.root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def idx_bytes(array: np.ndarray) -> bytes:
    """Uncompressed IDX encoding of a uint8 array (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % 10).astype(np.uint8)


def make_mnist_files(directory: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (120, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": _balanced_labels(120, rng),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": _balanced_labels(20, rng),
    }
    for name, array in arrays.items():
        # mtime=0 keeps the gzip bytes, hence the checksums, stable.
        (directory / name).write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return arrays


def make_cifar_tarball(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A CIFAR-10-format tarball: 5 train batches of 10 images and a test batch of 10, each a
    pickled dict with b"data" uint8 (N, 3072) and b"labels" (list of int), as the real one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    with tarfile.open(path, "w:gz") as tar:
        for member in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            x = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
            y = rng.permutation(10).tolist()
            add_member(tar, f"cifar-10-batches-py/{member}", {b"data": x, b"labels": y})
            xs.append(x)
            ys.append(y)
    return {
        "train_x": np.concatenate(xs[:5]).reshape(-1, 3, 32, 32),
        "train_y": np.concatenate(ys[:5]),
        "test_x": xs[5].reshape(-1, 3, 32, 32),
        "test_y": np.array(ys[5]),
    }


def add_member(tar: tarfile.TarFile, name: str, obj: object) -> None:
    raw = pickle.dumps(obj, protocol=2)  # the era of the real batches
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    tar.addfile(info, io.BytesIO(raw))


SHAKESPEARE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 60
WIKI = {
    "train": " = Valkyria Chronicles = \n Senjō no Valkyria 3 is a game .\n" * 40,
    "valid": " = Homarus gammarus = \n Homarus gammarus is a lobster .\n" * 8,
    "test": " = Robert Boulter = \n Robert Boulter is an English actor .\n" * 8,
}


def make_wikitext_zip(path: Path, folder: str = "wikitext-2-raw") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for split, text in WIKI.items():
            zf.writestr(f"{folder}/wiki.{split}.raw", text.encode("utf-8"))


FOOD_CLASSES = ("apple_pie", "bibimbap", "sushi")  # real Food-101 names, in its sorted order
FOOD_PER_CLASS = {"train": 10, "test": 3}
_FOOD_SIZES = ((64, 48), (48, 64), (40, 40))  # (width, height): landscape, portrait, square


def make_food101_tree(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A Food-101 tree in the official layout under `root` (= .../food-101): JPEGs whose left and
    right halves are two flat colours, so decoded pixels are known up to JPEG error and a
    transposed image shows; every fourth image is grayscale. Returns id -> uint8 (2, 3) colours."""
    colours, lists = {}, {"train": [], "test": []}
    for cls in FOOD_CLASSES:
        (root / "images" / cls).mkdir(parents=True)
        for split, count in FOOD_PER_CLASS.items():
            for _ in range(count):
                image_id = f"{cls}/{100_000 + len(colours) * 7919}"
                gray = len(colours) % 4 == 3
                pair = rng.integers(0, 256, (2, 1 if gray else 3), dtype=np.uint8)
                width, height = _FOOD_SIZES[len(colours) % len(_FOOD_SIZES)]
                pixels = np.empty((height, width, pair.shape[1]), dtype=np.uint8)
                pixels[:, : width // 2], pixels[:, width // 2 :] = pair[0], pair[1]
                image = Image.fromarray(pixels[..., 0] if gray else pixels, "L" if gray else "RGB")
                # subsampling=0 (4:4:4): no chroma bleeding across the colour edge.
                image.save(root / "images" / f"{image_id}.jpg", quality=95, subsampling=0)
                colours[image_id] = np.repeat(pair, 3 // pair.shape[1], axis=1)
                lists[split].append(image_id)
    (root / "meta").mkdir()
    (root / "meta" / "classes.txt").write_text("".join(f"{c}\n" for c in FOOD_CLASSES))
    for split, ids in lists.items():
        (root / "meta" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "README.txt").write_text("Food-101 test tree\n")
    return colours


def make_food101_archive(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """food-101.tar.gz at `path` holding a make_food101_tree tree as food-101/; returns its
    colours. The tree is built beside the archive and removed."""
    staging = path.parent / "food-101-staging"
    colours = make_food101_tree(staging / "food-101", rng)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(staging / "food-101", arcname="food-101")
    shutil.rmtree(staging)
    return colours


@pytest.fixture
def food101_tree():
    """make_food101_tree, for tests that lay out an extracted tree themselves."""
    return make_food101_tree


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


DOWNLOADABLE = (
    "cifar10", "fashion-mnist", "food101", "mnist", "tinyshakespeare", "wikitext103", "wikitext2",
)


@dataclass
class Served:
    server: LocalServer
    mnist: dict[str, np.ndarray]
    cifar: dict[str, np.ndarray]
    food101: dict[str, np.ndarray]  # image id -> its (left, right) RGB colours
    downloadable: tuple[str, ...] = DOWNLOADABLE


@pytest.fixture
def served(server, monkeypatch) -> Served:
    """Real-format files on the local server, the registry's checksums pointed at them (sha256,
    computed here), and the mirror env var pointed at the server."""
    rng = np.random.default_rng(1)
    mnist = make_mnist_files(server.root / "mnist", rng)
    cifar = make_cifar_tarball(server.root / "cifar10" / "cifar-10-python.tar.gz", rng)
    (server.root / "tinyshakespeare").mkdir()
    (server.root / "tinyshakespeare" / "input.txt").write_text(SHAKESPEARE)
    make_wikitext_zip(server.root / "wikitext2" / "wikitext-2-raw-v1.zip")
    make_wikitext_zip(server.root / "wikitext103" / "wikitext-103-raw-v1.zip", "wikitext-103-raw")
    make_mnist_files(server.root / "fashion-mnist", rng)
    (server.root / "food101").mkdir()
    food101 = make_food101_archive(server.root / "food101" / "food-101.tar.gz", rng)
    for name in DOWNLOADABLE:
        entries = tuple(
            RemoteFile(r.filename, (), sha256=sha256_of(server.root / name / r.filename))
            for r in sources.REMOTE_FILES[name]
        )
        monkeypatch.setitem(sources.REMOTE_FILES, name, entries)
    monkeypatch.setenv("BITSWEEP_DATA_MIRROR", server.url)
    return Served(server, mnist, cifar, food101)
