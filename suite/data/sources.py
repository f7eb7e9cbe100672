"""Where each downloadable dataset comes from and what its files must hash to.

REMOTE_FILES is a plain dict so tests (and users with a private copy) can swap in their own
entries; a mirror ($BITSWEEP_DATA_MIRROR or the `mirror` argument) replaces every URL by
`<mirror>/<dataset>/<filename>`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MIRROR_ENV = "BITSWEEP_DATA_MIRROR"


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where to get it and how to know it is the right one."""

    filename: str
    urls: tuple[str, ...]  # tried in order; later ones are fallbacks
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None  # bytes; used when no hash is known, and as a cheap early check


def _idx_files(bases: tuple[str, ...], md5s: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f, tuple(b + f for b in bases), md5=m) for f, m in md5s.items())


# The md5 values below are the publishers' (also the ones torchvision verifies). The Debian
# package dataset-fashion-mnist re-gzips the same IDX payload, so its .gz bytes hash
# differently; files from a system directory are format-checked, not hash-checked.
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": _idx_files(
        # yann.lecun.com now often refuses scripted downloads; the PyTorch-hosted copy is
        # byte-identical (same md5), so it goes first.
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": _idx_files(
        (
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": (
        RemoteFile(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            md5="c58f30108f718f92721af3b95e74349a",  # published on the CIFAR page
        ),
    ),
    "food101": (
        RemoteFile(
            "food-101.tar.gz",
            # The ETH Zurich vision group's own host, the only one known; about 5 GB.
            ("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",),
            # The value in wide use (torchvision verifies the same one); a mismatch names both
            # values, so a user holding a different copy can judge.
            md5="85eeb15f3717b99a5da872d97d918f87",
        ),
    ),
    "tinyshakespeare": (
        RemoteFile(
            "input.txt",
            (
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                "tinyshakespeare/input.txt",
            ),
            # No published hash exists for this file and we do not know one for sure: verify the
            # well-known size (1,115,394 ASCII bytes) and that it decodes as text instead.
            size=1_115_394,
        ),
    ),
    # The original research.metamind.io S3 bucket is gone; the author's own host serves the
    # same archives. The md5 values are the ones in wide use for the original zips (not posted
    # by the publisher itself); a mismatch therefore names both values so a user can judge.
    "wikitext2": (
        RemoteFile(
            "wikitext-2-raw-v1.zip",
            (
                "https://wikitext.smerity.com/wikitext-2-raw-v1.zip",
                "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip",
            ),
            md5="f407a2d53283fc4a49bcff21bc5f3770",
        ),
    ),
    "wikitext103": (
        RemoteFile(
            "wikitext-103-raw-v1.zip",
            (
                "https://wikitext.smerity.com/wikitext-103-raw-v1.zip",
                "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-raw-v1.zip",
            ),
            md5="0ca3512bd7a238be4a63ce7b434f8935",
        ),
    ),
}


def file_urls(dataset: str, remote: RemoteFile, mirror: str | None = None) -> tuple[str, ...]:
    """The URLs to try for one file: the mirror's only, when a mirror is set."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror:
        return (f"{mirror.rstrip('/')}/{dataset}/{remote.filename}",)
    return remote.urls
