"""Where datasets live on disk: one resolution rule shared by loaders and downloads."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

DATA_DIR_ENV = "BITSWEEP_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/bitsweep/data")
# Read-only places a system package may have put a dataset (Debian: dataset-fashion-mnist).
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data dir: the argument, else $BITSWEEP_DATA_DIR, else ~/.cache/bitsweep/data."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


def find_local_dir(
    name: str, filenames: tuple[str, ...], data_dir: Path
) -> tuple[Path, bool] | None:
    """The first directory holding all `filenames` for dataset `name`, and whether it is a system
    (package-managed, hence trusted) directory; None when no directory has them all."""
    candidates = [(root / name, True) for root in SYSTEM_DATA_DIRS]
    candidates.append((data_dir / name, False))
    for directory, is_system in candidates:
        if all((directory / f).is_file() for f in filenames):
            return directory, is_system
    return None


def write_atomically(path: Path, write: Callable[[str], object], *,
                     fix: str = "make the data dir writable or point BITSWEEP_DATA_DIR at one that is",
                     ) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it into place, so a reader
    never sees half a file; an unwritable data dir is a DatasetError saying so and ``fix``."""
    from suite.data.errors import DatasetError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot write {path} ({exc}); {fix}") from exc
