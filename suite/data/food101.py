"""Food-101 (Bossard et al., 2014) from the official archive, decoded once into a uint8 cache.

Layout, as `food-101.tar.gz` unpacks under <data_dir>/food101/:

    food-101/images/<class>/<id>.jpg
    food-101/meta/classes.txt   one class per line; the line number is the label
    food-101/meta/train.txt     `<class>/<id>` per line (750 per class), no extension
    food-101/meta/test.txt      the same (250 per class)

An extracted tree is used as it is; only its meta lists are trusted, and every image they name
must exist. Images are squashed to image_size x image_size (aspect ratio not kept, bilinear), the
default of Keras' image_dataset_from_directory, which paper 1's Keras-style model most likely
went through. Each split is decoded once per image size into <data_dir>/food101/decoded/, so a
later load, even one whose images have been deleted since, reads uint8 tensors and decodes
nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from suite.data.errors import DatasetError
from suite.data.fetch import ensure_files
from suite.data.images import SPLIT_SEED, channel_stats
from suite.data.paths import write_atomically
from suite.data.splits import DataSplits, make_splits, per_class_subset, stratified_holdout

NAME = "food101"
ARCHIVE = "food-101.tar.gz"
FOLDER = "food-101"
# 32 px: the suite's CNNs are sized for CIFAR-like 32 x 32 inputs, and all 101,000 images then
# take 0.3 GB as uint8 (64 px: 1.2 GB; paper 1's 256 px: 20 GB, which is why the splits stay
# uint8: float32 would take 4x that).
DEFAULT_IMAGE_SIZE = 32
# 75 per class of the 750 (7,575 images), the same tenth as CIFAR-10's held-out val.
_VAL_FRACTION = 1 / 10
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Food101Meta:
    """What meta/ lists: class names (index = label) and each split's image ids and labels."""

    root: Path
    classes: tuple[str, ...]
    ids: dict[str, np.ndarray]  # "train" / "test" -> `<class>/<id>` strings
    labels: dict[str, np.ndarray]  # "train" / "test" -> int64
    fingerprint: str  # sha256 of the three meta files: a cache made from other lists is stale

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / f"{image_id}.jpg"


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing: {path.parents[1]} is not a complete Food-101 tree; delete it "
            f"and let the archive be extracted again (or unpack {ARCHIVE} there)"
        )
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_meta(root: Path) -> Food101Meta:
    """Parse meta/classes.txt, train.txt and test.txt; raise naming the first bad line."""
    digest = hashlib.sha256()
    classes = _read_lines(root / "meta" / "classes.txt")
    digest.update("\n".join(classes).encode())
    index = {name: i for i, name in enumerate(classes)}
    ids, labels = {}, {}
    for split in ("train", "test"):
        path = root / "meta" / f"{split}.txt"
        lines = _read_lines(path)
        digest.update(f"\n#{split}\n".encode() + "\n".join(lines).encode())
        if not lines:
            raise DatasetError(f"{path} lists no images; extract the archive again")
        y = np.empty(len(lines), dtype=np.int64)
        for i, line in enumerate(lines):
            cls = line.split("/", 1)[0]
            if "/" not in line or cls not in index:
                raise DatasetError(
                    f"{path} line {i + 1}: {line!r} is not `<class>/<id>` with a class from "
                    "classes.txt; the meta files are corrupt or mixed up (extract them again)"
                )
            y[i] = index[cls]
        ids[split], labels[split] = np.array(lines), y
    return Food101Meta(root, tuple(classes), ids, labels, digest.hexdigest())


def check_images(meta: Food101Meta) -> None:
    """Raise DatasetError naming the first image a meta list names that is not on disk."""
    for split in ("train", "test"):
        for image_id in meta.ids[split]:
            path = meta.image_path(image_id)
            if not path.is_file():
                raise DatasetError(
                    f"{path} is listed in {meta.root / 'meta' / f'{split}.txt'} but missing: the "
                    f"tree is incomplete; delete {meta.root} and extract {ARCHIVE} again"
                )


def _safe_members(tar: tarfile.TarFile, archive: Path) -> Iterator[tarfile.TarInfo]:
    # tarfile's "data" filter does this on Python >= 3.11.4; older ones need the check here.
    for member in tar:
        parts = Path(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts:
            raise DatasetError(f"{archive} has a member outside its folder ({member.name!r})")
        if member.isfile() or member.isdir():
            yield member


def extract_archive(archive: Path, target: Path) -> Path:
    """Unpack `archive` so that target/food-101/ appears whole or not at all; return that dir."""
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".extract-"))
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, members=_safe_members(tar, archive), **extra)
            # tarfile takes a garbled header after the first for the end of the archive and
            # stops without a word; reading the gzip stream to its end checks its CRC instead.
            while tar.fileobj.read(1 << 20):
                pass
        if not (staging / FOLDER / "meta").is_dir():
            raise DatasetError(f"{archive} has no {FOLDER}/meta/ folder: it is not the Food-101 archive")
        os.replace(staging / FOLDER, target / FOLDER)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if (target / FOLDER).is_dir():  # another worker finished first
            return target / FOLDER
        raise DatasetError(
            f"cannot extract {archive}: {exc}; unless the disk is full (it needs about as much "
            "again as the archive), the archive is corrupt: delete it and download it again"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / FOLDER


def food101_root(data_dir: Path, download: bool) -> Path:
    """<data_dir>/food101/food-101 as found, else extracted from the (downloaded) archive."""
    target = data_dir / NAME
    if (target / FOLDER).is_dir():
        return target / FOLDER
    try:
        directory = ensure_files(NAME, data_dir, download)
    except DatasetError as exc:
        raise DatasetError(
            f"{exc}; or unpack {ARCHIVE} yourself so that {target / FOLDER / 'meta'} exists"
        ) from exc
    return extract_archive(directory / ARCHIVE, target)


def decode_image(path: Path, size: int) -> np.ndarray:
    """uint8 (3, size, size) RGB of one image file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            # JPEG's own 1/2-1/8 scaling during decode, down to no less than size x size: at
            # 32 px this doubles throughput, and the bilinear resize below still does the rest.
            image.draft("RGB", (size, size))
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"cannot decode {path}: {exc}; the file is corrupt, delete the tree it is in and "
            "extract the archive again"
        ) from exc
    return np.asarray(rgb).transpose(2, 0, 1)


def decode_images(paths: list[Path], size: int, workers: int = 1) -> np.ndarray:
    """uint8 (N, 3, size, size) of `paths`, in order, decoded by `workers` threads (Pillow
    releases the GIL while it decodes and resizes)."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = decode_image(paths[i], size)

    if workers <= 1:
        for i in range(len(paths)):
            one(i)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(paths))))
    return out


def _ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join(ids.tolist()).encode()).hexdigest()


def _load_cached(path: Path, meta: Food101Meta, ids: np.ndarray, size: int) -> torch.Tensor | None:
    """The cached uint8 images of `ids`, or None when there is no cache or it is stale."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise DatasetError(f"cached images {path} cannot be read ({exc}); delete it to decode again") from exc
    expected = {"version": _CACHE_VERSION, "meta": meta.fingerprint, "ids": _ids_digest(ids)}
    if any(blob.get(k) != v for k, v in expected.items()):
        return None  # other meta lists or another cache format: decode again, then replace it
    x = blob.get("x")
    shape = (len(ids), 3, size, size)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or tuple(x.shape) != shape:
        raise DatasetError(f"cached images {path} are not uint8 {shape}; delete it to decode again")
    return x


def _save_cached(path: Path, meta: Food101Meta, ids: np.ndarray, x: np.ndarray) -> None:
    blob = {"version": _CACHE_VERSION, "meta": meta.fingerprint, "ids": _ids_digest(ids),
            "x": torch.from_numpy(x)}
    write_atomically(path, lambda tmp: torch.save(blob, tmp),
                     fix=f"it needs {x.nbytes / 2**30:.2f} GiB in a writable data dir (free space "
                         "there, or point BITSWEEP_DATA_DIR elsewhere)")


def split_images(
    meta: Food101Meta, selections: dict[str, tuple[str, np.ndarray]], size: int, cache_dir: Path
) -> dict[str, np.ndarray]:
    """uint8 images of each split's ids, from cache_dir/<part>-<size>px.pt, decoding and caching
    the splits that are not cached yet. `selections` maps split -> (cache part name, ids)."""
    images = {}
    for split, (part, ids) in selections.items():
        x = _load_cached(cache_dir / f"{part}-{size}px.pt", meta, ids, size)
        if x is not None:
            images[split] = x.numpy()
    if len(images) < len(selections):
        # Before any decode, so a missing file is named now, not after minutes of decoding.
        check_images(meta)
    for split, (part, ids) in selections.items():
        if split not in images:
            paths = [meta.image_path(i) for i in ids]
            images[split] = decode_images(paths, size, torch.get_num_threads())
            _save_cached(cache_dir / f"{part}-{size}px.pt", meta, ids, images[split])
    return images


def load_food101(
    data_dir: Path, download: bool, subset: int | None, seed: int, image_size: int
) -> DataSplits:
    """DataSplits of Food-101: val = a stratified tenth of train (SPLIT_SEED), test = test.txt.

    `subset` keeps that many seeded images per class of train and decodes only those (plus val
    and test), so the channel statistics come from the subset's images: unlike the other image
    datasets, a subset's tensors are not rows of the full run's.
    """
    meta = read_meta(food101_root(data_dir, download))
    y_all = meta.labels["train"]
    held = stratified_holdout(y_all, _VAL_FRACTION, SPLIT_SEED)
    train_idx, val_idx = np.flatnonzero(~held), np.flatnonzero(held)
    train_part = "train"
    if subset is not None:
        train_idx = train_idx[per_class_subset(y_all[train_idx], subset, seed)]
        train_part = f"train-subset{subset}-seed{seed}"
    selections = {
        "train": (train_part, meta.ids["train"][train_idx]),
        "val": ("val", meta.ids["train"][val_idx]),
        "test": ("test", meta.ids["test"]),
    }
    labels = {"train": y_all[train_idx], "val": y_all[val_idx], "test": meta.labels["test"]}
    images = split_images(meta, selections, image_size, data_dir / NAME / "decoded")
    mean, std = channel_stats(images["train"])
    tensors = {}
    for split, x in images.items():
        # kept uint8 (a quarter of float32: paper 1's 256 px train split is 13 GiB, not 53), so
        # it can stay on a GPU; the loader normalises each batch there
        tensors[f"{split}_x"] = torch.from_numpy(np.require(x, requirements=["C", "W"]))
        tensors[f"{split}_y"] = torch.from_numpy(labels[split].copy())
    return make_splits(
        NAME,
        "image",
        tensors,
        num_classes=len(meta.classes),
        input_shape=(3, image_size, image_size),
        image_kind="natural",
        pixel_norm=(tuple(float(m) for m in mean), tuple(float(s) for s in std)),
    )
