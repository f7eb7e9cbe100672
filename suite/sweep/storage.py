"""Where a study lives: an Optuna journal file given by its path, or a database URL (sqlite,
postgresql, mysql). The sweep opens it to write (``create=True``: a new journal file and its
folder are made); the report opens it to read only (``create=False``: a journal file or SQLite
database that does not exist is an error, and nothing is created).

Light on purpose: the report imports it, so Optuna and SQLAlchemy load inside the functions that
need them, and torch and Lightning never.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class StorageError(ValueError):
    """The study's storage cannot be opened; the message says which and how to fix it."""


def describe(url: str) -> str:
    """The storage URL with any password hidden, for logs and reports."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def is_url(text: str) -> bool:
    """A database URL rather than a journal file path."""
    return "://" in text


def rdb_url(url: str) -> str:
    """Name a PostgreSQL driver that is installed: SQLAlchemy 2.1 reads a bare ``postgresql://``
    as psycopg 3, while the ``postgres`` extra installs psycopg2."""
    import importlib.util

    for bare in ("postgres://", "postgresql://"):
        if url.startswith(bare):
            rest = url[len(bare):]
            driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
            return f"postgresql+{driver}://{rest}"
    return url


def storage_file(url: str) -> Path | None:
    """The file a storage lives in: the journal file itself, or a SQLite URL's database; None for
    database servers and in-memory SQLite."""
    if not is_url(url):
        return Path(url)
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def open_storage(url: str, *, create: bool = True) -> Any:
    """An Optuna storage for a URL (sqlite, postgresql, mysql) or a journal file path.

    ``create=False`` (readers): a journal file or SQLite database that does not exist raises
    FileNotFoundError instead of being created, and no folder is made.
    """
    import optuna

    if not create:
        path = storage_file(url)
        if path is not None and not path.is_file():
            what = "not a URL and not a journal file" if not is_url(url) else f"no database file {path}"
            raise FileNotFoundError(f"no Optuna storage at {describe(url)!r}: {what}")
    if is_url(url):
        url = rdb_url(url)
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except ImportError as err:
            raise StorageError(f"storage {describe(url)}: driver missing ({err}); for PostgreSQL "
                               "install the postgres extra: pip install 'bitsweep[postgres]'") from None
        except Exception as err:  # SQLAlchemy's errors: bad URL, refused connection, bad login
            raise StorageError(f"storage {describe(url)} cannot be opened: "
                               f"{str(err).splitlines()[0]}") from None
    path = Path(url)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    # Optuna holds this lock only for one append; a worker SIGKILLed inside one leaves the lock
    # file behind, which the next process breaks after the grace period (Optuna's default, 30 s).
    lock = optuna.storages.journal.JournalFileOpenLock(str(path), grace_period=10)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path), lock))
