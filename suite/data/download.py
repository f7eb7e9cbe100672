"""Fetch one published file into the cache, atomically and verified.

The bytes go to a temporary `.part` file in the destination directory and are renamed into place
with os.replace only after the size and checksum match, so an interrupted or corrupt download
never leaves a file a later run could mistake for the real one; two workers fetching the same
file at once each write their own `.part` and the last verified rename wins.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from suite.data.errors import DatasetError
from suite.data.sources import RemoteFile

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
# Some dataset hosts refuse urllib's default agent string.
_USER_AGENT = "Mozilla/5.0 (compatible; bitsweep-data/1.0)"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks so large archives do not sit in memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, remote: RemoteFile, origin: str | None = None) -> None:
    """Raise DatasetError unless `path` has the size and hashes that `remote` records.

    `origin` (a URL or path) is what the message names as the file's source; default `path`.
    """
    origin = origin or str(path)
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise DatasetError(
            f"{remote.filename} from {origin} has {size} bytes, expected {remote.size}: it is "
            "truncated or not the published file; delete it and download again"
        )
    for algorithm in ("sha256", "md5"):
        expected = getattr(remote, algorithm)
        if expected is None:
            continue
        got = file_digest(path, algorithm)
        if got != expected.lower():
            raise DatasetError(
                f"{algorithm} mismatch for {remote.filename} from {origin}: expected {expected}, "
                f"got {got}; the file is corrupt or not the published one "
                "(delete it and download again)"
            )


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _open(url: str):
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    # A proxy from the environment must not capture a local test or mirror server.
    handlers = [urllib.request.ProxyHandler({})] if _is_loopback(url) else []
    return urllib.request.build_opener(*handlers).open(request, timeout=_TIMEOUT_S)


def _stream_to(url: str, fh) -> int:
    """Copy the body of `url` into `fh`; raise if the server sent less than it announced."""
    with _open(url) as response:
        announced = response.headers.get("Content-Length")
        received = 0
        while block := response.read(_CHUNK):
            fh.write(block)
            received += len(block)
    # http.client returns a short body without complaint when the peer closes early.
    if announced is not None and received != int(announced):
        raise DatasetError(
            f"download of {url} was cut off: got {received} of {announced} bytes; "
            "check the connection and try again"
        )
    return received


def download_file(remote: RemoteFile, urls: tuple[str, ...], dest_dir: Path) -> Path:
    """Download `remote` from the first URL that works into `dest_dir`, verify it, and return
    its final path. Raises DatasetError naming every URL tried when none gave a good file."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.filename
    failures: list[str] = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{remote.filename}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                _stream_to(url, fh)
            verify_file(tmp, remote, origin=url)
            os.replace(tmp, final)
            return final
        except DatasetError as exc:
            failures.append(str(exc))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            failures.append(f"could not download {url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    reasons = "; ".join(failures) or "no URL is known for it (set a mirror)"
    raise DatasetError(f"failed to fetch {remote.filename} into {dest_dir}: {reasons}")
