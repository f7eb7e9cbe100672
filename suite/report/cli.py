"""`bitsweep report`: find a study's storage, load it, and write its report.

The report goes beside the study's runs (``runs/<study>/report/``) unless ``--out ROOT`` asks for
``ROOT/<study>/``: a user's own sweep never overwrites the committed reference reports in
``reports/``, which are rebuilt only with ``--out reports``.

    bitsweep report sweeps/default.yaml                 # storage from the sweep file, else
                                                        # sqlite:///runs/<study>/optuna.db
    bitsweep report sweeps/default.yaml --storage URL   # the storage the sweep used
    bitsweep report <study> --storage URL               # a study by name (any Optuna storage)
    bitsweep report <study>                             # runs/<study>/optuna.db when it exists
    bitsweep report sweeps/default.yaml --wandb         # also one W&B run (suite.report.wandb)

Bad input raises ValueError or FileNotFoundError before anything is written (cli.main turns
them into exit status 2); the message says how to make what is missing.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from suite.run.config import WANDB_MODES
from suite.sweep.storage import describe, open_storage, storage_file

if TYPE_CHECKING:
    from suite.report.frame import StudyFrames
    from suite.sweep.spec import SweepSpec

_SPEC_SUFFIXES = (".yaml", ".yml")


def report_command(
    target: str,
    *,
    storage: str | None,
    out_root: Path | None,
    runs_root: Path,
    argv: list[str],
    formats: str | None = None,
    wandb: bool = False,
    wandb_mode: str | None = None,
) -> Path:
    """Build the report of ``target`` (a sweep file or a study name) and return report.md.

    ``wandb`` (or a ``wandb_mode``): also log it as one W&B run beside the study's runs
    (suite.report.wandb); the report's files are the same either way."""
    from suite.report import build_report, load_study
    from suite.report.frame import EmptyStudy
    from suite.report.style import FORMATS, parse_formats

    chosen = parse_formats(formats) if formats else FORMATS  # bad list: exit 2 before any work
    if wandb_mode is not None and wandb_mode not in WANDB_MODES:
        raise ValueError(f"--wandb-mode {wandb_mode!r}: choose one of {', '.join(WANDB_MODES)}")
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
    except EmptyStudy as err:
        raise ValueError(f"{err}: run `{sweep_command or make}` to queue and train them") from None
    _say_integrity(frames, storage)
    if frames.spec_yaml is None and spec_yaml is not None:
        frames.spec_yaml = spec_yaml  # a study written without its spec: show the file's
    if frames.spec is None and spec is not None:
        frames.spec = spec.raw
    out_dir = report_dir(study, out_root=out_root, runs_root=Path(runs_root))
    command = format_command(_without_wandb_flags(argv))
    path = build_report(frames, out_dir, study=study, command=command, cwd=os.getcwd(),
                        formats=chosen, sweep_command=sweep_command)
    if wandb or wandb_mode is not None:
        _log_to_wandb(path, frames, study=study, spec=spec, mode=wandb_mode,
                      save_dir=Path(runs_root) / study, command=command)
    return path


def _say_integrity(frames: StudyFrames, storage: str) -> None:
    """Name every trial whose stored result failed its checksum, and how many could not be
    checked (stored before results carried one): on stderr, so intact reports keep their bytes."""
    from suite.sweep.storage import REPAIR_COMMAND, is_url

    fix = ("" if is_url(storage) else f"; `{REPAIR_COMMAND} {storage}` fails it so that the next "
           "`bitsweep sweep` runs its cell again")
    for line in frames.damaged:
        print(f"bitsweep report: damaged record: {line}; left out of the report{fix}",
              file=sys.stderr)
    if frames.unverified:
        print(f"bitsweep report: {frames.unverified} finished trial(s) were stored before results "
              "carried a checksum: used unverified", file=sys.stderr)


REPORT_SUBDIR = "report"  # RUNS/<study>/report/: a study's own report, beside its trials


def report_dir(study: str, *, out_root: Path | None, runs_root: Path) -> Path:
    """Where the report of ``study`` is written: ``out_root/<study>/`` when asked, else beside
    the study's runs, so that the default never touches the committed ``reports/<study>/``."""
    if out_root is not None:
        return Path(out_root) / study
    return Path(runs_root) / study / REPORT_SUBDIR


def _log_to_wandb(path: Path, frames: StudyFrames, *, study: str, spec: SweepSpec | None,
                  mode: str | None, save_dir: Path, command: str) -> None:
    from suite.report.wandb import log_report, wandb_place

    place = wandb_place(study, frames, spec=spec, mode=mode)
    try:
        where = log_report(path.parent, frames, study=study, place=place, save_dir=save_dir,
                           config={"command": command})
    except Exception as err:  # not exit 2's "nothing written": the report is there
        raise RuntimeError(f"wrote {path}, but logging it to W&B failed: "
                           f"{type(err).__name__}: {err}") from err
    if where:
        print(f"bitsweep: logged the report to W&B (project {place.project}, group "
              f"{place.group}): {where}", file=sys.stderr)


# The command recorded in report.md rebuilds the report; logging it to W&B is not part of it, so a
# rebuild neither logs another run nor differs from a report built without the flag.
_WANDB_FLAGS = ("--wandb", "--wandb-mode")


def _without_wandb_flags(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--wandb-mode":
            skip = True  # and its value
        elif arg not in _WANDB_FLAGS and not arg.startswith("--wandb-mode="):
            out.append(arg)
    return out


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
