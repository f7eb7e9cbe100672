"""How fast does Food-101 go from archive to cached tensors?

Builds a Food-101-layout archive of generated photos-like JPEGs (smooth colour fields plus grain,
about the size of real Food-101 files at 512 x 384), then times, per image size:
  extract   food-101.tar.gz -> food-101/ (once);
  decode    Pillow decode + resize of every image (decode_images), per thread count;
  first     load_dataset("food101") on the extracted tree: decode, write the uint8 caches,
            channel statistics, checksum (the splits stay uint8: loaders normalise per batch);
  cached    the same call again: cache read, channel statistics, checksum.
--test-tree times the 39-image tree the tests serve (tests/data/conftest.py) instead.

    python bench/bench_food101.py [--images 2000] [--sizes 32 64 256] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from suite.data import load_dataset
from suite.data.food101 import decode_images, extract_archive, read_meta

ROOT = Path(__file__).resolve().parents[1]


def photo_like(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A JPEG of a smooth random colour field with grain: compresses like a photo, not like
    noise (which would make decoding look slower) nor like a flat fill (faster)."""
    coarse = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    field = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.normal(0, 6, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=85)
    return out.getvalue()


def make_tree(root: Path, images: int, width: int, height: int, classes: int) -> int:
    """A food-101/ tree of `images` JPEGs over `classes` classes, 3/4 train; returns its bytes."""
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    total = 0
    for i in range(images):
        cls = f"class_{i % classes:03d}"
        image_id = f"{cls}/{i}"
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        blob = photo_like(rng, width, height) if i % 4 else photo_like(rng, height, width)
        (root / "images" / f"{image_id}.jpg").write_bytes(blob)
        total += len(blob)
        lists["test" if (i // classes) % 4 == 3 else "train"].append(image_id)
    (root / "meta").mkdir()
    (root / "meta" / "classes.txt").write_text("".join(f"class_{c:03d}\n" for c in range(classes)))
    for split, ids in lists.items():
        (root / "meta" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return total


def _timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds of fn(): on a shared machine CPU time is the steadier figure."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(work: Path, sizes: list[int], threads: list[int]) -> None:
    tree = work / "data" / "food101" / "food-101"
    meta = read_meta(tree)
    paths = [meta.image_path(i) for split in ("train", "test") for i in meta.ids[split]]
    n = len(paths)
    def row(label: str, size: int, t: int, seconds: tuple[float, float]) -> None:
        wall, cpu = seconds
        print(f"{label:8s} {size:4d} px  threads={t}  {wall:7.2f} s  {n / wall:7.0f} images/s  "
              f"CPU {cpu:7.2f} s  {n / cpu:7.0f} images/CPU-s")

    for size in sizes:
        for t in threads:
            row("decode", size, t, _timed(lambda: decode_images(paths, size, t)))  # noqa: B023
        torch.set_num_threads(max(threads))  # load_dataset decodes with torch's thread count
        for label in ("first", "cached"):
            row(label, size, max(threads), _timed(
                lambda: load_dataset("food101", data_dir=work / "data", image_size=size, download=False)  # noqa: B023
            ))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--test-tree", action="store_true", help="the tests' 39-image tree")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-food101-"))
    try:
        staging = work / "staging" / "food-101"
        if args.test_tree:
            sys.path.insert(0, str(ROOT / "tests" / "data"))
            from conftest import make_food101_tree

            make_food101_tree(staging, np.random.default_rng(0))
            size = sum(p.stat().st_size for p in staging.rglob("*.jpg"))
        else:
            size = make_tree(staging, args.images, args.width, args.height, args.classes)
        count = sum(1 for _ in staging.rglob("*.jpg"))
        archive = work / "food-101.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(staging, arcname="food-101")
        shutil.rmtree(work / "staging")
        mib = archive.stat().st_size / 2**20
        print(f"{count} JPEGs, {size / count / 1024:.1f} KiB each; archive {mib:.1f} MiB")
        wall, cpu = _timed(lambda: extract_archive(archive, work / "data" / "food101"))
        print(f"extract                       {wall:7.2f} s  {count / wall:7.0f} images/s  CPU {cpu:7.2f} s")
        bench(work, args.sizes, args.threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
