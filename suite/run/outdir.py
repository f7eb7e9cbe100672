"""A run's directory, written so that it is always one run, whole or visibly unfinished.

A run trains into a fresh sibling directory (``.<name>.partial-<pid>``) and the sibling takes the
run directory's name only at the end. So a directory that holds a finished run (``result.json``)
keeps it, byte for byte, until a new run has finished; an interrupted or failed run never mixes
its files with an earlier run's. A run that ends without a result (failed, interrupted, pruned)
still leaves what it wrote (its curves, its W&B run) under the run directory's name, as a run
without ``result.json``, unless that would replace a finished run.

A process killed outright (SIGKILL, out of memory, power loss) cannot do that last step: its
sibling stays behind. The next run into the same directory on the same machine finishes it as
the killed process would have (``recover``); siblings are named by host and pid, so a run on
another machine sharing the folder, or one still alive, is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from suite.run.config import ConfigError
from suite.run.files import RESULT_NAME, RUN_FILES

# What a run directory may hold: its files and W&B's folder. A directory holding anything else
# is not replaced, so `--out .` or `--out ~` can never remove someone's files.
RUN_ENTRIES = frozenset({*RUN_FILES, "wandb", "lightning_logs"})


def finished(out: Path) -> bool:
    """Whether ``out`` holds a finished run."""
    return (out / RESULT_NAME).is_file()


def check_out(out: Path, *, overwrite: bool) -> None:
    """Refuse (ConfigError) a run directory that cannot take a new run: a file, a directory of
    other things, or (without ``overwrite``) a finished run. What a killed run on this machine
    left beside it is finished first (``recover``)."""
    if not out.exists() or (out.is_dir() and not _others(out)):  # never beside others' files
        recover(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"out={str(out)!r}: is a file, not a run directory; give a directory")
    others = _others(out)
    if others:
        raise ConfigError(f"out={str(out)!r}: holds files that are not a run's ({', '.join(others[:3])}"
                          f"{', ...' if len(others) > 3 else ''}); give a new or empty directory")
    if finished(out) and not overwrite:
        raise ConfigError(f"out={str(out)!r}: holds a finished run ({RESULT_NAME}); give another "
                          f"directory, or --overwrite to replace it once the new run has finished")


def _others(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name not in RUN_ENTRIES)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _sibling(out: Path, kind: str, pid: int | None = None) -> Path:
    """``.<name>.partial-<host>-<pid>`` (a run being written) or ``.<name>.old-<host>-<pid>`` (the
    run it replaces, between two renames)."""
    return out.parent / f".{out.name}.{kind}-{_host()}-{os.getpid() if pid is None else pid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def recover(out: Path) -> list[str]:
    """Finish what runs killed on this machine left beside ``out``, as they would have: a
    sibling holding a finished run, or any run while ``out`` holds no finished one, becomes
    ``out``; an unfinished sibling beside a finished run is removed; the earlier run a killed
    replacement had moved aside is put back if nothing took its place, else removed. Returns
    (and says on stderr) what it did."""
    if not out.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(partial|old)-{re.escape(_host())}-(\d+)")
    left = [(p, m[1]) for p in out.parent.iterdir()
            if (m := pattern.fullmatch(p.name)) and int(m[2]) != os.getpid()
            and not _alive(int(m[2]))]
    done = []
    for path, kind in sorted(left, key=lambda e: e[0].stat().st_mtime):
        if kind == "old" and not out.exists():
            os.rename(path, out)
            done.append(f"put back the run {path.name} held (a replacement was killed)")
        elif kind == "old" or (finished(out) and not finished(path)):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path.name}, left by a killed run")
        else:
            _replace(path, out)
            done.append(f"{path.name}, left by a killed run, is now {out.name} "
                        f"({'finished' if finished(out) else 'without a result'})")
    for line in done:
        print(f"bitsweep: {out}: {line}", file=sys.stderr)
    return done


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh directory beside ``out`` to write the run into; it becomes ``out`` when the block
    ends. When the block raises and ``out`` holds a finished run, the staged files are removed
    and ``out`` is left as it was."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = _sibling(out, "partial")
        if stage.exists():  # left by a killed process that had this pid
            shutil.rmtree(stage)
        stage.mkdir()
    except OSError as err:
        raise ConfigError(f"out={str(out)!r}: cannot create the run directory ({err})") from None
    try:
        yield stage
    except BaseException:
        if finished(out):
            shutil.rmtree(stage, ignore_errors=True)
            print(f"bitsweep: the run did not finish; the finished run in {out} is kept as it was",
                  file=sys.stderr)
        else:
            _replace(stage, out)
        raise
    _replace(stage, out)


def _replace(stage: Path, out: Path) -> None:
    """Give ``stage`` the name ``out``; what ``out`` held (earlier run files only, see
    check_out) goes. Between the two renames ``out`` is briefly absent, never a mix."""
    if not out.exists():
        os.rename(stage, out)
        return
    old = _sibling(out, "old")
    if old.exists():
        shutil.rmtree(old)
    os.rename(out, old)
    try:
        os.rename(stage, out)
    except BaseException:
        os.rename(old, out)  # put the earlier run back rather than leave no run at all
        raise
    shutil.rmtree(old, ignore_errors=True)
