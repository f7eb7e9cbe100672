"""load_dataset: one name -> one DataSplits, for every dataset the suite knows.

Fixed splits (all independent of the run seed, so val/test never move between runs):
- digits: scikit-learn's 1,797 8x8 digits, stratified 60/20/20 train/val/test.
- mnist, fashion-mnist: val = 1/12 of train (5,000 of 60,000), stratified; test = t10k.
- cifar10: val = 1/10 of train (5,000 of 50,000), stratified; test = test_batch.
- stdlib-text, tinyshakespeare: one text cut 90/5/5 into train/val/test, in order.
- wikitext2, wikitext103: the official wiki.train/valid/test.raw files.
- food101: val = 1/10 of meta/train.txt (7,575 of 75,750), stratified; test = meta/test.txt.
`subset=n` keeps n seeded examples per class of train for images, and the first n windows of
train for text (`seed` unused there: the text stays contiguous). val and test are never cut.
food101 decodes only the subset's train images, so its channel statistics come from them.
Text corpora come as char tokens or as WordPiece tokens learnt from their train split
(suite/data/wordpiece.py); either way in windows of block_size, targets shifted by one.
"""

from __future__ import annotations

import importlib.util
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from suite.data.cifar import read_cifar10
from suite.data.corpora import stdlib_corpus
from suite.data.errors import DatasetError
from suite.data.fetch import ensure_files
from suite.data.food101 import DEFAULT_IMAGE_SIZE, load_food101
from suite.data.idx import read_idx
from suite.data.images import SPLIT_SEED, build_image_splits
from suite.data.names import DATASETS, dataset_option_error, is_user_dataset
from suite.data.paths import resolve_data_dir
from suite.data.splits import DataSplits, stratified_holdout
from suite.data.text import build_text_splits, contiguous_split, normalise_text, normalise_utf8
from suite.data.wordpiece import DEFAULT_VOCAB_SIZE, build_wordpiece_splits

# Held-out val as a fraction of train: 5,000 images on the real MNIST-likes (60,000) and CIFAR-10
# (50,000); fractions keep the rule meaningful on the small files the tests serve.
_VAL_MNIST = 1 / 12
_VAL_CIFAR = 1 / 10
_TEXT_FRACTIONS = (0.90, 0.05, 0.05)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (x uint8 (N, 8, 8) in 0..16, y int64)."""
    # Importing sklearn costs ~1.5 s (scipy); its digits are one CSV it ships, which load_digits
    # only parses. Read that file directly and fall back to load_digits if the layout moves.
    spec = importlib.util.find_spec("sklearn")
    roots = (spec.submodule_search_locations or []) if spec else []
    for root in roots:
        csv = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",", dtype=np.float64)
            return table[:, :-1].reshape(-1, 8, 8).astype(np.uint8), table[:, -1].astype(np.int64)
    if spec is None:
        raise DatasetError("dataset 'digits' needs scikit-learn: pip install scikit-learn")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)


def _digits(subset: int | None, seed: int, **_) -> DataSplits:
    x, y = _digits_arrays()
    x = x[:, None]  # (N, 1, 8, 8)
    test = stratified_holdout(y, 0.2, SPLIT_SEED)
    return build_image_splits(
        "digits",
        (x[~test], y[~test]),
        (x[test], y[test]),
        val=0.25,
        num_classes=10,
        image_kind="digit",
        subset=subset,
        seed=seed,
    )


def _idx_dataset(name: str, image_kind: str) -> Callable[..., DataSplits]:
    def load(data_dir: Path, download: bool, subset: int | None, seed: int, **_) -> DataSplits:
        directory = ensure_files(name, data_dir, download)

        def pair(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            x = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")
            y = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz")
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DatasetError(
                    f"{directory}/{prefix}-*: images {x.shape} and labels {y.shape} do not pair "
                    "up as (N, H, W) and (N,); the files are corrupt or mixed up"
                )
            return x[:, None], y.astype(np.int64)

        return build_image_splits(
            name,
            pair("train"),
            pair("t10k"),
            val=_VAL_MNIST,
            num_classes=10,
            image_kind=image_kind,
            subset=subset,
            seed=seed,
        )

    return load


def _cifar10(data_dir: Path, download: bool, subset: int | None, seed: int, **_) -> DataSplits:
    # Pickles: checksum the tarball wherever it was found, before anything is unpickled.
    directory = ensure_files("cifar10", data_dir, download, trust_system=False)
    parts = read_cifar10(directory / "cifar-10-python.tar.gz")
    return build_image_splits(
        "cifar10",
        parts["train"],
        parts["test"],
        val=_VAL_CIFAR,
        num_classes=10,
        image_kind="natural",
        subset=subset,
        seed=seed,
    )


def _food101(
    data_dir: Path, download: bool, subset: int | None, seed: int, image_size: int | None, **_
) -> DataSplits:
    return load_food101(data_dir, download, subset, seed, image_size or DEFAULT_IMAGE_SIZE)


def _text_splits(
    name: str,
    parts: tuple[bytes, ...],
    block_size: int,
    subset: int | None,
    *,
    data_dir: Path,
    tokenizer: str,
    vocab_size: int | None,
    **_,
) -> DataSplits:
    if tokenizer == "wordpiece":
        vocab_size = vocab_size or DEFAULT_VOCAB_SIZE
        return build_wordpiece_splits(name, parts, block_size, subset, data_dir, vocab_size)
    return build_text_splits(name, parts, block_size, subset)


def _stdlib_text(block_size: int, subset: int | None, **options) -> DataSplits:
    parts = contiguous_split(normalise_text(stdlib_corpus()), _TEXT_FRACTIONS)
    return _text_splits("stdlib-text", parts, block_size, subset, **options)


def _tinyshakespeare(
    data_dir: Path, download: bool, block_size: int, subset: int | None, **options
) -> DataSplits:
    path = ensure_files("tinyshakespeare", data_dir, download) / "input.txt"
    text = normalise_utf8(path.read_bytes(), str(path))
    parts = contiguous_split(text, _TEXT_FRACTIONS)
    return _text_splits("tinyshakespeare", parts, block_size, subset, data_dir=data_dir, **options)


def _wikitext(name: str, archive: str) -> Callable[..., DataSplits]:
    def load(
        data_dir: Path, download: bool, block_size: int, subset: int | None, **options
    ) -> DataSplits:
        path = ensure_files(name, data_dir, download) / archive
        try:
            with zipfile.ZipFile(path) as zf:
                members = {Path(m).name: m for m in zf.namelist()}
                wanted = ("wiki.train.raw", "wiki.valid.raw", "wiki.test.raw")
                if missing := [w for w in wanted if w not in members]:
                    raise DatasetError(f"{path} lacks {missing}; is it the *-raw-v1 archive?")
                parts = tuple(normalise_utf8(zf.read(members[w]), f"{path}:{w}") for w in wanted)
        except zipfile.BadZipFile as exc:
            raise DatasetError(
                f"{path} is not a zip archive ({exc}); delete it, fetch again"
            ) from exc
        return _text_splits(name, parts, block_size, subset, data_dir=data_dir, **options)

    return load


_LOADERS: dict[str, Callable[..., DataSplits]] = {
    "cifar10": _cifar10,
    "digits": _digits,
    "fashion-mnist": _idx_dataset("fashion-mnist", "natural"),
    "food101": _food101,
    "mnist": _idx_dataset("mnist", "digit"),
    "stdlib-text": _stdlib_text,
    "tinyshakespeare": _tinyshakespeare,
    "wikitext103": _wikitext("wikitext103", "wikitext-103-raw-v1.zip"),
    "wikitext2": _wikitext("wikitext2", "wikitext-2-raw-v1.zip"),
}
if tuple(sorted(_LOADERS)) != DATASETS:  # the names, their tasks and rules live in names.py
    raise RuntimeError(f"suite/data/names.py DATASETS {DATASETS} != the loaders {sorted(_LOADERS)}")


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    subset: int | None = None,
    seed: int = 0,
    block_size: int = 64,
    download: bool = True,
    image_size: int | None = None,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    dataset_args: dict[str, Any] | None = None,
) -> DataSplits:
    """Load dataset `name` as CPU tensors split into train/val/test (see the module doc): a
    built-in one, or the user's (a registered name or an import string, called with
    `dataset_args`; suite/data/user.py).

    data_dir: where downloads are cached and files are looked for; default $BITSWEEP_DATA_DIR,
    else ~/.cache/bitsweep/data. subset: n examples per class of train (images) or the first n
    windows of train (text). seed: picks the subset only. block_size: text window length.
    download: False never touches the network and raises DatasetError if files are missing.
    image_size: side of the square images of food101 (None: 32; paper 1: 256). tokenizer: "char"
    or "wordpiece" for the text corpora. vocab_size: WordPiece vocabulary (None: 30,522).
    """
    user = is_user_dataset(name)
    if name not in _LOADERS and not user:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if subset is not None and subset < 1:
        raise DatasetError(f"subset={subset} must be a positive count or None")
    if why := dataset_option_error(name, image_size=image_size, tokenizer=tokenizer,
                                   vocab_size=vocab_size):
        raise DatasetError(why)
    if dataset_args and not user:
        raise DatasetError(f"dataset_args={dataset_args!r}: the built-in dataset {name!r} takes "
                           "none; leave dataset_args empty")
    if user:
        from suite.data.user import load_user_dataset

        return load_user_dataset(name, dataset_args=dict(dataset_args or {}), subset=subset,
                                 seed=seed, block_size=block_size)
    return _LOADERS[name](
        data_dir=resolve_data_dir(data_dir),
        download=download,
        subset=subset,
        seed=seed,
        block_size=block_size,
        image_size=image_size,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
    )
