"""Reader for the official CIFAR-10 python tarball (pickled batches).

Pickle can run code, so the caller verifies the tarball's checksum before calling this, and the
unpickler below additionally refuses every global except the few numpy needs to rebuild arrays.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from suite.data.errors import DatasetError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"

# (module, name) pairs a numpy array pickle refers to; numpy 2 moved numpy.core to numpy._core.
# _codecs.encode is how Python 3 writes bytes at protocol 2; it only converts text to bytes.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def _load_batch(raw: bytes, member: str) -> tuple[np.ndarray, np.ndarray]:
    # encoding="bytes" reads the original Python 2 pickles: keys come back as b"data".
    batch = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    if not isinstance(batch, dict):
        raise DatasetError(f"CIFAR member {member} holds {type(batch).__name__}, expected dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DatasetError(f"CIFAR member {member} lacks 'data' or 'labels' (keys: {list(batch)})")
    data = np.asarray(data, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetError(
            f"CIFAR member {member}: data shape {data.shape} / {len(labels)} labels, "
            "expected (N, 3072) and N labels"
        )
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10(tarball: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (x, y), "test": (x, y)} with x uint8 (N, 3, 32, 32) and y int64 (N,)."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if n not in members]
            if missing:
                raise DatasetError(f"{tarball} lacks CIFAR members {missing}")

            def load(name: str) -> tuple[np.ndarray, np.ndarray]:
                fh = tar.extractfile(members[name])
                assert fh is not None  # regular file members always have a file object
                return _load_batch(fh.read(), name)

            train = [load(n) for n in TRAIN_BATCHES]
            test = load(TEST_BATCH)
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DatasetError(
            f"cannot read CIFAR-10 tarball {tarball}: {exc}; delete it and fetch it again"
        ) from exc
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return {"train": (x_train, y_train), "test": test}
