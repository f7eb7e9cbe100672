"""`bitsweep report`: find a study's storage, load it, and write reports/<study>/.

    bitsweep report sweeps/default.yaml                 # storage from the sweep file, else
                                                        # sqlite:///runs/<study>/optuna.db
    bitsweep report sweeps/default.yaml --storage URL   # the storage the sweep used
    bitsweep report <study> --storage URL               # a study by name (any Optuna storage)
    bitsweep report <study>                             # runs/<study>/optuna.db when it exists

Bad input raises ValueError or FileNotFoundError before anything is written (cli.main turns
them into exit status 2); the message says how to make what is missing.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from suite.sweep.storage import describe, open_storage, storage_file

_SPEC_SUFFIXES = (".yaml", ".yml")


def report_command(
    target: str,
    *,
    storage: str | None,
    out_root: Path,
    runs_root: Path,
    argv: list[str],
    formats: str | None = None,
) -> Path:
    """Build the report of ``target`` (a sweep file or a study name) and return report.md."""
    from suite.report import build_report, load_study
    from suite.report.style import FORMATS, parse_formats

    chosen = parse_formats(formats) if formats else FORMATS  # bad list: exit 2 before any work
    spec = None
    spec_yaml = None
    sweep_command = None
    if _looks_like_spec(target):
        from suite.sweep.spec import load_spec

        spec = load_spec(target)  # SpecError is a ValueError: bad file -> exit 2
        study = spec.study
        given = (("--storage", describe(storage) if storage else None),
                 ("--runs", None if Path(runs_root) == Path("runs") else str(runs_root)))
        storage = storage or spec.default_storage(Path(runs_root))
        spec_yaml = Path(target).read_text()
        make = f"bitsweep sweep {target}"
        sweep_command = make + "".join(f" {flag} {shlex.quote(v)}" for flag, v in given if v)
    else:
        study = target
        make = "bitsweep sweep sweeps/<study>.yaml"
        if storage is None:
            storage = _default_storage(study, Path(runs_root), target, make)
    try:
        frames = load_study(study, storage)  # reads only: a missing file is not created
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no study storage at {storage_file(storage)} (study {study!r}): run `{make}` first, "
            f"or pass --storage with the URL the sweep used") from None
    except KeyError:
        # optuna.load_study: "Record does not exist." Name what is there instead.
        raise ValueError(_unknown_study(study, storage, make)) from None
    if frames.spec_yaml is None and spec_yaml is not None:
        frames.spec_yaml = spec_yaml  # a study written without its spec: show the file's
    if frames.spec is None and spec is not None:
        frames.spec = spec.raw
    out_dir = Path(out_root) / study
    return build_report(frames, out_dir, study=study, command=format_command(argv),
                        cwd=os.getcwd(), formats=chosen, sweep_command=sweep_command)


def _looks_like_spec(target: str) -> bool:
    return target.endswith(_SPEC_SUFFIXES) or os.sep in target or Path(target).is_file()


# Where `bitsweep sweep` keeps a study without a storage setting (SweepSpec.default_storage):
# a journal file; older studies used SQLite.
_DEFAULT_FILES = ("optuna.journal", "optuna.db")


def _default_storage(study: str, runs_root: Path, target: str, make: str) -> str:
    for name in _DEFAULT_FILES:
        path = runs_root / study / name
        if path.is_file():
            return str(path) if name.endswith(".journal") else f"sqlite:///{path.as_posix()}"
    raise FileNotFoundError(
        f"{target!r} is neither a sweep file nor a study stored under {runs_root / study}/ "
        f"({' or '.join(_DEFAULT_FILES)}); give the sweep file (sweeps/<study>.yaml), or the "
        f"study name with --storage URL, or create the study with `{make}`")


def _unknown_study(study: str, storage: str, make: str) -> str:
    import optuna

    try:
        names = sorted(optuna.get_all_study_names(storage=open_storage(storage, create=False)))
    except Exception:  # listing is only a hint; the storage opened a moment ago
        names = []
    there = f"studies there: {', '.join(names)}" if names else "it holds no study"
    return (f"no study {study!r} in {describe(storage)} ({there}); create it with `{make}`, "
            f"or name one of the studies there")


def format_command(argv: list[str]) -> str:
    """The command line as a user would type it again: the program as `bitsweep`, storage
    passwords masked, arguments shell-quoted."""
    if not argv:
        return "bitsweep report"
    prog = Path(argv[0]).name
    head = ["bitsweep"] if prog in ("bitsweep", "__main__.py", "cli.py") else [argv[0]]
    return shlex.join([*head, *(describe(a) if "://" in a else a for a in argv[1:])])
