"""Where a study lives: an Optuna journal file given by its path, or a database URL (sqlite,
postgresql, mysql). The sweep opens it to write (``create=True``: a new journal file and its
folder are made); the report opens it to read only (``create=False``: a journal file or SQLite
database that does not exist is an error, and nothing is created).

A journal file is checked before Optuna reads it. Its last record cut short (a crash or a full
disk in the middle of an append) is set aside by a writer (kept in ``<journal>.torn-<time>``, said
once on stderr) and skipped in memory by a reader, which never modifies a journal. A damaged record
anywhere else is an error that names the file, the line and ``bitsweep repair-journal``
(suite.sweep.repair: a backup of the file, every result kept on its own trial).

Light on purpose: the report imports it, so Optuna and SQLAlchemy load inside the functions that
need them, and torch and Lightning never.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPAIR_COMMAND = "bitsweep repair-journal"
_SQLITE_WAIT_SECONDS = 60  # pysqlite's 5 s wait for SQLite's one writer is short for many workers
_JOURNAL_LOCK_GRACE = 10   # seconds before a lock left by a killed writer is broken
_RECORD_START = b'{"op_code":'  # how Optuna writes every journal record (compact json.dumps)


class StorageError(ValueError):
    """The study's storage cannot be opened; the message says which and how to fix it."""


# A URL's password: after "user:", up to the last "@" of the line (SQLAlchemy ends it at the first
# "@"; the last one also hides a mistyped, unescaped "@" in a password, at worst more than that),
# and libpq's/PyMySQL's ?password= / ?passwd= query parameter.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/]*):[^\n]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd)=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``: the one form in which
    a storage URL (or a command line, or a sweep file, holding one) is printed, stored or
    logged anywhere."""
    return _QUERY_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>:***@", text))


def redact_all(value: Any) -> Any:
    """``value`` (a sweep file's dict, a list, text) with every string in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_all(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(item) for item in value)
    return value


def describe(url: str) -> str:
    """The storage URL with any password hidden, for logs and reports."""
    return redact(url)


def is_url(text: str) -> bool:
    """A database URL rather than a journal file path."""
    return "://" in text


def rdb_url(url: str) -> str:
    """Name a driver that is installed: SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg
    3, while the ``postgres`` extra installs psycopg2; a bare ``mysql://`` as mysqlclient, while
    the ``mysql`` extra installs PyMySQL (pure Python)."""
    import importlib.util

    for bare in ("postgres://", "postgresql://"):
        if url.startswith(bare):
            rest = url[len(bare):]
            driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
            return f"postgresql+{driver}://{rest}"
    if url.startswith("mysql://") and not importlib.util.find_spec("MySQLdb"):
        url = "mysql+pymysql://" + url[len("mysql://"):]
    return _with_mysql_pwd(url) if url.startswith("mysql") else url


def _with_mysql_pwd(url: str) -> str:
    """A MySQL URL without a password takes ``MYSQL_PWD``'s, as MySQL's own clients do (PyMySQL
    does not read it; an option file named by ``?read_default_file=`` is read by the driver and
    left to it). In memory only: what is recorded goes through ``describe``. PostgreSQL needs no
    such step: libpq itself reads PGPASSWORD and ~/.pgpass (PGPASSFILE)."""
    from sqlalchemy.engine import make_url

    password = os.environ.get("MYSQL_PWD")
    parsed = make_url(url)
    if not password or parsed.password is not None or "read_default_file" in parsed.query:
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


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
    FileNotFoundError instead of being created, no folder is made and a journal is not modified.
    """
    path = storage_file(url)
    if not create and path is not None and not path.is_file():
        what = "not a URL and not a journal file" if not is_url(url) else f"no database file {path}"
        raise FileNotFoundError(f"no Optuna storage at {describe(url)!r}: {what}")
    if create and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if is_url(url):
        return _open_rdb(url)
    return _open_journal(Path(url), set_aside=create)


def _open_rdb(url: str) -> Any:
    import optuna

    url = rdb_url(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite:"):
        engine_kwargs["connect_args"] = {"timeout": _SQLITE_WAIT_SECONDS}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as err:  # SQLAlchemy's errors: bad URL, refused connection, bad login
        raise unreachable(url, err) from None


def unreachable(url: str, err: Exception) -> StorageError:
    """The error for a database that cannot be opened: a driver missing, a bad URL, a refused
    connection or login (the password hidden)."""
    if isinstance(err, ImportError):
        return StorageError(f"storage {describe(url)}: driver missing ({err}); install the "
                            "extra: pip install 'bitsweep[postgres]' or 'bitsweep[mysql]'")
    return StorageError(f"storage {describe(url)} cannot be opened: {str(err).splitlines()[0]}")


def _journal_lock(path: Path) -> Any:
    """The lock Optuna takes around every append to the journal at ``path``."""
    import optuna

    # Optuna holds it only for one append; a writer SIGKILLed inside one leaves the lock file
    # behind, which the next process breaks after the grace period (Optuna's default: 30 s).
    return optuna.storages.journal.JournalFileOpenLock(str(path), grace_period=_JOURNAL_LOCK_GRACE)


def _open_journal(path: Path, *, set_aside: bool) -> Any:
    import optuna

    lock = _journal_lock(path)
    if path.is_file():
        _check_tail(path, lock, set_aside=set_aside)
    backend = optuna.storages.journal.JournalFileBackend(str(path), lock)
    try:
        return optuna.storages.JournalStorage(backend)
    except (ValueError, KeyError, TypeError):  # Optuna's replay met a record it cannot read
        bad = next((line for line in _scan(path.read_bytes()) if not line.intact), None)
        if bad is None:
            raise
        raise StorageError(_damage_message(path, bad.number, _flaw(bad.data))) from None


def _damage_message(path: Path, number: int, why: str) -> str:
    return (f"journal {path}: line {number} is not a complete record ({why}), so the study cannot "
            f"be read past it. Stop every sweep on this study, then run `{REPAIR_COMMAND} {path}`: "
            "it keeps a backup of the file and every intact record")


def _record(line: bytes) -> dict[str, Any] | None:
    """The journal record a line holds, or None when it is not one whole record."""
    try:
        record = json.loads(line)
    except ValueError:  # bad JSON, or bytes that are not UTF-8
        return None
    return record if isinstance(record, dict) and "op_code" in record else None


def _flaw(line: bytes) -> str:
    """What is wrong with a line that is not a record, in the line's own terms."""
    try:
        json.loads(line)
    except json.JSONDecodeError as err:  # its "line 1 column N" would read as the file's line
        return f"{err.msg} at byte {err.pos + 1} of {len(line.rstrip())}"
    except ValueError as err:
        return str(err)
    return "valid JSON, but not an Optuna journal record"


def _last_line(path: Path, end: int | None = None, chunk: int = 1 << 16) -> tuple[int, bytes]:
    """Where the last line before byte ``end`` (default: the end of the file) starts, and its
    bytes (its newline too, when it has one)."""
    with path.open("rb") as fh:
        pos = fh.seek(0, os.SEEK_END) if end is None else end
        tail = b""
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            fh.seek(pos)
            tail = fh.read(step) + tail
            cut = tail.rfind(b"\n", 0, len(tail) - 1)  # the newline before the last line
            if cut >= 0:
                return pos + cut + 1, tail[cut + 1:]
        return 0, tail


def _line_number(path: Path, offset: int, chunk: int = 1 << 20) -> int:
    """The 1-based number of the line that starts at byte ``offset``."""
    newlines = 0
    with path.open("rb") as fh:
        while offset > 0:
            block = fh.read(min(chunk, offset))
            if not block:
                break
            newlines += block.count(b"\n")
            offset -= len(block)
    return newlines + 1


def _check_tail(path: Path, lock: Any, *, set_aside: bool) -> None:
    """Leave the journal ending in whole records before Optuna reads it (see the module doc).

    Optuna itself skips an unterminated last line and, silently, a bad last whole line too; the
    next append would then bury either in the middle of the file, where it stops every reader.
    """
    from optuna.storages.journal._file import get_lock_file

    offset, last = _last_line(path)
    if last and not last.endswith(b"\n"):
        if set_aside:
            with get_lock_file(lock):  # every append holds this lock: unfinished under it is torn
                offset, last = _last_line(path)
                if last and not last.endswith(b"\n"):  # not an append that has finished since
                    _set_aside_tail(path, offset, last)
            offset, last = _last_line(path)
        else:
            print(f"bitsweep: journal {path}: its last record (line {_line_number(path, offset)}, "
                  f"{len(last)} bytes) is incomplete (a crash or a full disk mid-write, or a sweep "
                  "writing it now) and is read without it; the next `bitsweep sweep` sets it aside",
                  file=sys.stderr)
    if last and not last.endswith(b"\n"):  # skipped: the line before it is the last one read
        offset, last = _last_line(path, offset)
    if last and _record(last) is None:
        raise StorageError(_damage_message(path, _line_number(path, offset), _flaw(last)))


def _set_aside_tail(path: Path, offset: int, last: bytes) -> None:
    number = _line_number(path, offset)
    if _record(last) is not None:  # the whole record is there, only its newline was not written
        with path.open("ab") as fh:
            fh.write(b"\n")
            os.fsync(fh.fileno())
        print(f"bitsweep: journal {path}: line {number} lacked its final newline; completed it",
              file=sys.stderr)
        return
    side = _free_name(path, "torn")
    with side.open("wb") as fh:  # kept before the journal is cut: nothing stored is ever lost
        fh.write(last)
        os.fsync(fh.fileno())
    os.truncate(path, offset)
    print(f"bitsweep: journal {path}: its last record (line {number}, {len(last)} bytes) was cut "
          f"short by a crash or a full disk; set aside in {side}, every complete record is kept",
          file=sys.stderr)


def _free_name(path: Path, what: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    side = path.with_name(f"{path.name}.{what}-{stamp}")
    n = 1
    while side.exists():
        n += 1
        side = path.with_name(f"{path.name}.{what}-{stamp}-{n}")
    return side


@dataclass(frozen=True)
class _Line:
    number: int
    data: bytes
    intact: bool


def _scan(data: bytes) -> list[_Line]:
    return [_Line(number, line, line.endswith(b"\n") and _record(line) is not None)
            for number, line in enumerate(data.splitlines(keepends=True), start=1)]
