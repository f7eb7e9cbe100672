"""Find a downloadable dataset's files locally, or download them: the one place that decides
which directory a loader reads from.

Search order: a system package directory (/usr/share/datasets/<name>/, e.g. Debian's
dataset-fashion-mnist), then <data_dir>/<name>/, then a download into <data_dir>/<name>/.
Files under data_dir are checked against the published checksums before use (a cached file
may be a user's copy of something else); package-managed ones are trusted to the package
manager and only format-checked by their reader (Debian re-gzips Fashion-MNIST, so its .gz
bytes differ from the published ones) -- except pickles, which are verified wherever found.
"""

from __future__ import annotations

from pathlib import Path

from suite.data import paths
from suite.data.download import download_file, verify_file
from suite.data.errors import DatasetError
from suite.data.sources import REMOTE_FILES, file_urls

_APT_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}


def _how_to_get(name: str, data_dir: Path, offer_download: bool = True) -> str:
    filenames = ", ".join(r.filename for r in REMOTE_FILES[name])
    ways = []
    if name in _APT_PACKAGES:
        ways.append(f"`apt-get install {_APT_PACKAGES[name]}`")
    ways.append(
        f"put {filenames} in {data_dir / name} "
        f"(or set {paths.DATA_DIR_ENV} to a dir holding {name}/)"
    )
    if offer_download:
        ways.append("allow the download (download=True)")
    return "; or ".join(ways)


def ensure_files(
    name: str,
    data_dir: Path,
    download: bool,
    *,
    trust_system: bool = True,
    mirror: str | None = None,
) -> Path:
    """The directory holding every file of dataset `name`, downloading missing ones if allowed.

    trust_system=False checksums files from a system directory too (for formats that are not
    safe to parse unverified, i.e. pickles).

    Raises DatasetError saying how to get the files when they are missing and download is off
    or fails, and when a cached file does not match its checksum.
    """
    remotes = REMOTE_FILES[name]
    found = paths.find_local_dir(name, tuple(r.filename for r in remotes), data_dir)
    if found is not None:
        directory, is_system = found
        if not is_system or not trust_system:
            for remote in remotes:
                verify_file(directory / remote.filename, remote)
        return directory
    target = data_dir / name
    missing = [r for r in remotes if not (target / r.filename).is_file()]
    if not download:
        searched = [str(root / name) for root in paths.SYSTEM_DATA_DIRS] + [str(target)]
        raise DatasetError(
            f"dataset {name!r} is not on this machine (looked in {', '.join(searched)}) and "
            f"download=False; to get it: {_how_to_get(name, data_dir)}"
        )
    for remote in remotes:
        if remote in missing:
            try:
                download_file(remote, file_urls(name, remote, mirror), target)
            except DatasetError as exc:
                how = _how_to_get(name, data_dir, offer_download=False)
                raise DatasetError(f"{exc}. To get {name!r} without the network: {how}") from exc
        else:
            verify_file(target / remote.filename, remote)
    return target
