"""A run's directory, written so that it is always one run, whole or visibly unfinished.

A run trains into a fresh sibling directory (``.<name>.partial-<pid>``) and the sibling takes the
run directory's name only at the end. So a directory that holds a finished run (``result.json``)
keeps it, byte for byte, until a new run has finished; an interrupted or failed run never mixes
its files with an earlier run's. A run that ends without a result (failed, interrupted, pruned)
still leaves what it wrote (its curves, its W&B run) under the run directory's name, as a run
without ``result.json``, unless that would replace a finished run.
"""

from __future__ import annotations

import os
import shutil
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
    other things, or (without ``overwrite``) a finished run."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"out={str(out)!r}: is a file, not a run directory; give a directory")
    others = sorted(p.name for p in out.iterdir() if p.name not in RUN_ENTRIES)
    if others:
        raise ConfigError(f"out={str(out)!r}: holds files that are not a run's ({', '.join(others[:3])}"
                          f"{', ...' if len(others) > 3 else ''}); give a new or empty directory")
    if finished(out) and not overwrite:
        raise ConfigError(f"out={str(out)!r}: holds a finished run ({RESULT_NAME}); give another "
                          f"directory, or --overwrite to replace it once the new run has finished")


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh directory beside ``out`` to write the run into; it becomes ``out`` when the block
    ends. When the block raises and ``out`` holds a finished run, the staged files are removed
    and ``out`` is left as it was."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = out.parent / f".{out.name}.partial-{os.getpid()}"
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
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if old.exists():
        shutil.rmtree(old)
    os.rename(out, old)
    try:
        os.rename(stage, out)
    except BaseException:
        os.rename(old, out)  # put the earlier run back rather than leave no run at all
        raise
    shutil.rmtree(old, ignore_errors=True)
