"""Fixtures for the sweep tests: sweep files on disk and a real PostgreSQL server.

The server is a private cluster made with Debian's postgresql binaries (initdb + pg_ctl) in a
temporary directory on a free loopback port, so the tests need no system service and leave
nothing behind. ``BITSWEEP_TEST_POSTGRES_URL`` points the tests at an existing server instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def write_spec(tmp_path: Path):
    """write_spec(dict) -> path of a sweep file holding it."""

    def write(raw: dict, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    if shutil.which("initdb"):
        return Path(shutil.which("initdb")).parent
    pytest.fail("PostgreSQL server binaries not found: apt-get install postgresql "
                "(.ci/run does this), or set BITSWEEP_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if os.environ.get("BITSWEEP_TEST_POSTGRES_URL"):
        yield os.environ["BITSWEEP_TEST_POSTGRES_URL"]
        return
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="bitsweep-pg-"))
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    if as_root:  # initdb refuses to run as root: run the server as the postgres user
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "bitsweep")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/bitsweep"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
