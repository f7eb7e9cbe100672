"""`bitsweep report --wandb`: a study's outcome as one W&B run beside its runs.

The run (job type ``report``, named ``<study>/report``) holds the results table, the claims table
and every figure, read back from the files the report has just written, so the dashboard shows the
same numbers and the same PNG bytes as reports/<study>/. Logging only reads those files: the
report is byte for byte the one built without ``--wandb``.

Where it goes: the project of the study's runs (the spec's wandb project, default ``bitsweep``);
group: the one group all the study's runs share when they share one (a spec that fixes
``wandb_group``), else the study's name. The runs' own groups are per configuration
(``RunConfig.group()``), so a workspace grouped by group shows the report as the study's group
among them. Mode: ``--wandb-mode``, else the spec's wandb mode, else offline, like the runs;
offline runs land in ``<runs>/<study>/wandb/`` next to the trials', so one
``wandb sync <runs>/<study>/wandb/offline-run-*`` uploads both.

wandb (and matplotlib, for a figure the report wrote without a PNG) is imported only when a run is
logged: ``import suite.report.cli`` stays light.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from suite.report.frame import StudyFrames

DEFAULT_PROJECT = "bitsweep"
DEFAULT_MODE = "offline"
JOB_TYPE = "report"


@dataclass(frozen=True)
class WandbPlace:
    """Where the report run goes: mode, project and group."""

    mode: str
    project: str
    group: str


def _spec_setting(spec: Any, frames: StudyFrames, attr: str) -> str | None:
    """``attr`` (wandb_mode or wandb_project) of the sweep file, else of the spec stored with the
    study, parsed as the sweep parsed it (a ``fixed`` value wins over the wandb section)."""
    if spec is None and isinstance(frames.spec, dict):
        from suite.sweep.spec import parse_spec

        try:
            spec = parse_spec(frames.spec)
        except Exception:  # a spec stored by an older version: the runs' own values still tell
            spec = None
    return getattr(spec, attr, None) if spec is not None else None


def _only_value(results: pd.DataFrame, column: str) -> str | None:
    """The value every run recorded in ``column``, when they all agree on one."""
    if column not in results:
        return None
    values = results[column].dropna().astype(str).unique()
    return str(values[0]) if len(values) == 1 else None


def wandb_place(study: str, frames: StudyFrames, *, spec: Any = None,
                mode: str | None = None) -> WandbPlace:
    """Mode, project and group of the report run of ``study`` (see the module docstring).
    ``spec``: the SweepSpec of the sweep file given on the command line, if any; ``mode``: the
    ``--wandb-mode`` override."""
    res = frames.results
    mode = (mode or _spec_setting(spec, frames, "wandb_mode") or _only_value(res, "wandb_mode")
            or DEFAULT_MODE)
    project = (_spec_setting(spec, frames, "wandb_project") or _only_value(res, "wandb_project")
               or DEFAULT_PROJECT)
    return WandbPlace(mode=mode, project=project, group=_only_value(res, "wandb_group") or study)


def _table(path: Path) -> Any:
    import wandb

    # A CSV column of strings with empty cells reads back as str and float NaN: W&B's per-column
    # type check would refuse it, and the table is shown as it was written.
    return wandb.Table(dataframe=pd.read_csv(path), allow_mixed_types=True)


def _figure_names(fig_dir: Path) -> list[str]:
    """Every figure the report wrote (any format), in the report's order."""
    from suite.report.figures import FIGURES

    written = {p.stem for p in fig_dir.iterdir() if p.is_file()} if fig_dir.is_dir() else set()
    order = [f.__name__ for f in FIGURES]
    return [n for n in order if n in written] + sorted(written - set(order))


def _draw_pngs(frames: StudyFrames, names: list[str], tmp: Path) -> dict[str, Path]:
    """PNGs of figures the report wrote only as PDF or SVG (W&B shows raster images), drawn again
    from the same frames the same way, into ``tmp``."""
    from suite.report import style
    from suite.report.figures import drawer
    from suite.report.stats import prepare

    data = prepare(frames)
    out: dict[str, Path] = {}
    with style.paper_style():
        for name in names:
            found = drawer(name)  # the figure and width (7 in or 3.5 in) of these files
            if found is not None:
                drawn = found[0](data, found[1])
                out[name] = style.save_figure(drawn.fig, tmp / name, ("png",))[0]
    return out


def _say(message: str) -> None:
    print(f"bitsweep: {message}", file=sys.stderr)


def log_report(out_dir: Path, frames: StudyFrames, *, study: str, place: WandbPlace,
               save_dir: Path, config: dict[str, Any] | None = None) -> str | None:
    """Log reports/<study>/ (``out_dir``, already written) as one W&B run and return the run's
    local directory; None when the mode is ``disabled``. ``save_dir``: where W&B writes (its
    ``wandb/`` folder is made inside it)."""
    from suite.run.tracking import decide_mode, finish, start

    save_dir = Path(save_dir)
    mode = decide_mode(place.mode, save_dir)
    if mode == "disabled":
        _say("W&B mode is disabled (the spec's wandb mode); the report was not logged. "
             "Pass --wandb-mode offline or online to log it.")
        return None
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    names = _figure_names(fig_dir)
    run = start(mode=mode, save_dir=save_dir, job_type=JOB_TYPE, project=place.project,
                group=place.group, name=f"{study}/report", tags=["report"],
                config={"study": study, "runs": len(frames.results), **(config or {})})
    import wandb

    exit_code = 1
    try:
        with tempfile.TemporaryDirectory(prefix="bitsweep-report-") as tmp:
            pngs = {n: fig_dir / f"{n}.png" for n in names if (fig_dir / f"{n}.png").is_file()}
            pngs |= _draw_pngs(frames, [n for n in names if n not in pngs], Path(tmp))
            logged: dict[str, Any] = {"results": _table(out_dir / "results.csv"),
                                      "claims": _table(out_dir / "tables" / "claims.csv")}
            logged |= {f"figures/{n}": wandb.Image(str(pngs[n])) for n in names if n in pngs}
            # W&B copies the media into the run while logging, so tmp may go afterwards
            run.log(logged)
        for name in (n for n in names if n not in pngs):
            _say(f"figure {name}: not logged to W&B (no PNG, and no figure of that name to draw)")
        exit_code = 0
    finally:
        where = finish(run, {}, exit_code=exit_code)
    return where
