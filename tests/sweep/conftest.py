"""Fixtures for the sweep tests: sweep files on disk and real PostgreSQL and MariaDB servers.

Each server is private: made with Debian's binaries (initdb + pg_ctl; mariadb-install-db +
mariadbd) in a temporary directory on a free loopback port, so the tests need no system service
and leave nothing behind. ``BITSWEEP_TEST_POSTGRES_URL`` / ``BITSWEEP_TEST_MYSQL_URL`` point the
tests at an existing server instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
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


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A private MariaDB server (MySQL's protocol and SQL) on a free loopback port."""
    if os.environ.get("BITSWEEP_TEST_MYSQL_URL"):
        yield os.environ["BITSWEEP_TEST_MYSQL_URL"]
        return
    server, install = shutil.which("mariadbd", path="/usr/sbin:/usr/bin"), shutil.which(
        "mariadb-install-db")
    if not (server and install):
        pytest.fail("MariaDB server binaries not found: apt-get install mariadb-server "
                    "(.ci/run does this), or set BITSWEEP_TEST_MYSQL_URL")
    root = Path(tempfile.mkdtemp(prefix="bitsweep-mysql-"))
    data, port = root / "data", _free_port()
    user = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root unless told
    subprocess.run([install, "--no-defaults", f"--datadir={data}", *user, "--skip-test-db",
                    "--auth-root-authentication-method=normal"], check=True, capture_output=True,
                   timeout=120)
    proc = subprocess.Popen([server, "--no-defaults", f"--datadir={data}", *user, f"--port={port}",
                             "--bind-address=127.0.0.1", f"--socket={root / 'sock'}",
                             f"--pid-file={root / 'pid'}", f"--log-error={root / 'log'}",
                             "--skip-name-resolve", "--max-connections=500"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # it logs to log
    try:
        import sqlalchemy

        admin = sqlalchemy.create_engine(f"mysql+pymysql://root@127.0.0.1:{port}/mysql",
                                         poolclass=sqlalchemy.pool.NullPool)
        for _ in range(300):  # up within a few seconds; the log says why if it never is
            try:
                with admin.connect() as conn:
                    conn.execute(sqlalchemy.text("CREATE DATABASE bitsweep"))
                break
            except sqlalchemy.exc.OperationalError:
                if proc.poll() is not None:
                    pytest.fail(f"mariadbd exited: {(root / 'log').read_text()[-2000:]}")
                time.sleep(0.1)
        else:
            pytest.fail(f"mariadbd did not accept connections: {(root / 'log').read_text()[-2000:]}")
        yield f"mysql+pymysql://root@127.0.0.1:{port}/bitsweep"
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(root, ignore_errors=True)
