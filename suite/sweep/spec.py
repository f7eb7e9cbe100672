"""Sweep files (sweeps/*.yaml): parsed and validated whole before anything trains.

Top-level keys (a contract users write against)::

    study: tiny                        # Optuna study name; W&B group prefix
    description: free text             # optional
    fixed: {dataset: digits}           # RunConfig values shared by every trial
    grid:                              # full factorial over RunConfig fields (or a list of them)
      model: [fc, cnn]
      precision: [fp32, 1, 2.32, bnn]  # or bits: [1, 2] with zero: [false, true]
      seed: [0, 1]
    tune:                              # optional, searched by TPE inside each grid cell
      lr: {low: 1.0e-4, high: 1.0e-2, log: true}
      trials: 4
    objective: {metric: val_acc, direction: maximize}
    pruner: none                       # median | hyperband (only with tune)
    storage: null                      # default: journal file runs/<study>/optuna.journal
    wandb: {mode: offline, project: bitsweep}
    workers: 1                         # default for --workers
    max_cells: 100000                  # optional: the most cells the grid may have

``grid`` may also be a list of such mappings: the study is the union of their cells (so an LM on
text and image models on images can share one study without impossible combinations).

A grid is counted (the product of its axes' lengths) before any cell is built, and one larger
than ``max_cells`` (default :data:`MAX_CELLS`; ``bitsweep sweep --max-cells`` overrides it) is
refused: each cell costs about 0.4 ms and 1.8 KB to validate and a queued trial in the storage,
so a 10^7-cell grid took some 70 CPU-minutes and 18 GB before anything ran.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.quant.resolution import parse_resolution
from suite.run.config import ConfigError, RunConfig, config_fields
from suite.yamlfile import YamlFileError, read_yaml

TOP_KEYS = ("study", "description", "fixed", "grid", "tune", "objective", "pruner", "storage",
            "wandb", "workers", "max_cells")
PRUNERS = ("none", "median", "hyperband")
OBJECTIVE_METRICS = ("val_acc", "best_val_acc", "test_acc", "val_loss", "train_loss", "val_ppl")
_AXES_EXTRA = ("bits", "zero")
# The most cells a grid may have unless the sweep file (max_cells) or --max-cells says more:
# ~70x the largest shipped study (stability.yaml, 1,440 cells), about 40 s and 180 MB of
# validation, and some 40 hours of training on 2 cores even at the default study's pace of
# 468 runs in 12 minutes. A grid beyond it is far more likely a mistake than a plan.
MAX_CELLS = 100_000
# A study name is a directory name (runs/<study>/, its report's folder), the W&B group and run
# name prefix and an Optuna study name: short enough for all of them on any filesystem (a file
# name may have 255 bytes) with room for what is appended.
MAX_STUDY_NAME = 100


class SpecError(ValueError):
    """A sweep file is malformed; the message names the key (and line when known)."""


@dataclass(frozen=True)
class TuneParam:
    name: str
    low: float
    high: float
    log: bool = False
    kind: str = "float"  # float | int | categorical
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SweepSpec:
    study: str
    cells: tuple[RunConfig, ...]
    tune: tuple[TuneParam, ...] = ()
    trials_per_cell: int = 1
    metric: str = "val_acc"
    direction: str = "maximize"
    pruner: str = "none"
    storage: str | None = None
    workers: int = 1
    wandb_mode: str = "offline"
    wandb_project: str = "bitsweep"
    description: str = ""
    axes: tuple[str, ...] = ()   # the RunConfig fields that vary between cells
    max_cells: int = MAX_CELLS
    raw: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def n_trials(self) -> int:
        return len(self.cells) * self.trials_per_cell

    def key(self, config: RunConfig) -> str:
        return cell_key(config, self.axes)

    def axis_values(self) -> dict[str, tuple[Any, ...]]:
        """Each grid axis's values in the order the sweep file lists them, as the cells hold them
        (precision as its label, ``width: [1, 2]`` as 1.0, 2.0); a grid of a list that leaves an
        axis out adds the value its cells have."""
        values: dict[str, list[Any]] = {axis: [] for axis in self.axes}
        for cell in self.cells:
            for axis, seen in values.items():
                value = getattr(cell, axis)
                # by type too: True == 1 and 1 == 1.0, but they are different choices
                if not any(type(v) is type(value) and v == value for v in seen):
                    seen.append(value)
        return {axis: tuple(seen) for axis, seen in values.items()}

    def default_storage(self, runs_root: Path) -> str:
        """Where the study lives unless ``--storage`` says otherwise: an Optuna journal file, safe
        for many worker processes on one machine (SQLite locks up under concurrent writers)."""
        return self.storage or str(runs_root / self.study / "optuna.journal")


# The longest path a sweep writes below runs/<study>/ (a trial's W&B offline run file:
# trials/t00000/... or wandb/offline-run-<time>-<id>/files/wandb-metadata.json, ~80 characters),
# with room to spare.
_DEEPEST_BELOW_STUDY = 160


def check_study_paths(spec: SweepSpec, runs_root: Path) -> None:
    """Refuse (SpecError) a runs root under which the study's files would have paths longer than
    its filesystem takes, before anything is created."""
    study_dir = Path(os.path.abspath(runs_root / spec.study))
    existing = next(p for p in (study_dir, *study_dir.parents) if os.path.isdir(p))
    try:
        limit = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        limit = 4096
    longest = len(os.fsencode(study_dir)) + _DEEPEST_BELOW_STUDY
    if longest > limit:
        raise SpecError(f"study {spec.study!r}: its folder {study_dir} is too deep for the files a "
                        f"sweep writes below it (up to {longest} bytes, the filesystem takes "
                        f"{limit}); use a shorter --runs path or study name")


def cell_key(config: RunConfig, fields: tuple[str, ...]) -> str:
    """A stable, readable key of a cell: the grid fields' values, sorted by name."""
    return json.dumps({f: getattr(config, f) for f in sorted(fields)}, sort_keys=True)


def _line_of(text: str, key: str) -> str:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*:", line):
            return f" (line {i})"
    return ""


def _expand(grid: dict[str, Any], fixed: dict[str, Any], where: str,
            text: str) -> list[tuple[RunConfig, tuple[str, ...]]]:
    known = config_fields()
    if not isinstance(grid, dict) or not grid:
        raise SpecError(f"{where}: the grid is empty; give at least one field with a list of values")
    for key, values in grid.items():
        if key not in known and key not in _AXES_EXTRA:
            raise SpecError(f"{where}.{key}{_line_of(text, key)}: unknown field; grid fields are "
                            f"RunConfig fields ({', '.join(sorted(known))}) or bits/zero")
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}.{key}{_line_of(text, key)}: needs a non-empty list of values, "
                            f"got {values!r}")
    if "zero" in grid and "bits" not in grid:
        raise SpecError(f"{where}.zero: needs a bits axis (bit budget k; zero gives N = 2^k + 1)")
    if "bits" in grid and ("precision" in grid or "precision" in fixed):
        raise SpecError(f"{where}.bits: give either bits (with zero) or precision, not both")
    names = list(grid)
    out = []
    for combo in itertools.product(*(grid[n] for n in names)):
        values = {**fixed, **dict(zip(names, combo))}
        if "bits" in values:
            bits, zero = values.pop("bits"), values.pop("zero", False)
            try:
                values["precision"] = parse_resolution(bits, zero=zero).label
            except ValueError as err:
                raise SpecError(f"{where}.bits{_line_of(text, 'bits')}: {err}") from None
        elif values.get("precision") is not None and not isinstance(values["precision"], str):
            # YAML reads `precision: [1, 2.32]` as numbers; the label is what a RunConfig holds.
            try:
                values["precision"] = parse_resolution(values["precision"]).label
            except ValueError as err:
                raise SpecError(f"{where}.precision{_line_of(text, 'precision')}: {err}") from None
        try:
            config = RunConfig.from_dict(values)
        except (ConfigError, ValueError, TypeError) as err:
            raise SpecError(f"{where}: cell {dict(zip(names, combo))} is invalid: {err}") from None
        axes = tuple(sorted({n for n in names if n not in _AXES_EXTRA}
                             | ({"precision"} if "bits" in names else set())))
        out.append((config, axes))
    return out


# --- one parser per top-level key ---------------------------------------------------------------
#
# parse_spec calls each with the key's value (its parameter default when the key is absent), the
# file's text (for line numbers) and ``got``: the SweepSpec fields parsed so far, plus ``fixed``,
# the RunConfig values every cell shares. Each returns the fields it adds.

_Fields = dict[str, Any]


def _parse_study(study: Any = None, *, text: str, got: _Fields) -> _Fields:
    if not isinstance(study, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", study or ""):
        raise SpecError(f"study{_line_of(text, 'study')}: needs a name of letters, digits, '-', '_' "
                        f"or '.', got {study!r}")
    if len(study) > MAX_STUDY_NAME:
        raise SpecError(f"study{_line_of(text, 'study')}: the name has {len(study)} characters, "
                        f"more than {MAX_STUDY_NAME} (it names the study's folder and W&B group); "
                        f"use a shorter name")
    return {"study": study}


def _parse_description(description: Any = None, *, text: str, got: _Fields) -> _Fields:
    return {"description": str(description or "")}


def _parse_fixed(fixed: Any = None, *, text: str, got: _Fields) -> _Fields:
    fixed = fixed or {}
    if not isinstance(fixed, dict):
        raise SpecError(f"fixed{_line_of(text, 'fixed')}: expected a mapping, got {fixed!r}")
    for key in fixed:
        if key not in config_fields():
            raise SpecError(f"fixed.{key}{_line_of(text, key)}: unknown RunConfig field; known: "
                            f"{', '.join(sorted(config_fields()))}")
    return {"fixed": {**fixed}}


def _parse_wandb(wandb: Any = None, *, text: str, got: _Fields) -> _Fields:
    wandb = wandb or {}
    if not isinstance(wandb, dict) or set(wandb) - {"mode", "project"}:
        raise SpecError(f"wandb: expected {{mode, project}}, got {wandb!r}")
    fixed = {**got["fixed"]}  # a mode or project in fixed wins over the wandb section
    if "mode" in wandb:
        fixed.setdefault("wandb_mode", wandb["mode"])
    fixed.setdefault("wandb_project", wandb.get("project", SweepSpec.wandb_project))
    return {"fixed": fixed, "wandb_mode": fixed.get("wandb_mode", SweepSpec.wandb_mode),
            "wandb_project": fixed["wandb_project"]}


def _count_cells(grids: list[Any]) -> int:
    """The cells of ``grids`` before any is built: per grid the product of its axes' lengths
    (overlapping grids' shared cells counted in each). A malformed grid counts 0 here; building
    it says what is wrong."""
    return sum(math.prod(len(v) if isinstance(v, list) else 1 for v in grid.values())
               for grid in grids if isinstance(grid, dict))


def _parse_max_cells(max_cells: Any = MAX_CELLS, *, text: str, got: _Fields) -> _Fields:
    if not isinstance(max_cells, int) or isinstance(max_cells, bool) or max_cells < 1:
        raise SpecError(f"max_cells{_line_of(text, 'max_cells')}: must be an integer >= 1, got "
                        f"{max_cells!r}")
    return {"max_cells": max_cells}


def _parse_grid(grids: Any = None, *, text: str, got: _Fields) -> _Fields:
    if grids is None:
        raise SpecError("grid: missing; give a mapping of RunConfig fields to lists of values")
    grids = grids if isinstance(grids, list) else [grids]
    if not grids:
        raise SpecError("grid: the grid is empty")
    limit = got.get("max_cells_override") or got["max_cells"]
    count = _count_cells(grids)
    if count > limit:
        raise SpecError(f"grid{_line_of(text, 'grid')}: {count:,} cells, more than the limit of "
                        f"{limit:,}; make the grid smaller, or lift the limit with max_cells: "
                        f"{count} in the sweep file or bitsweep sweep --max-cells {count}")
    cells: list[RunConfig] = []
    seen: set[str] = set()
    all_axes: set[str] = set()
    expanded = []
    for i, grid in enumerate(grids):
        where = "grid" if len(grids) == 1 else f"grid[{i}]"
        expanded.extend(_expand(grid, got["fixed"], where, text))
    for _config, axes in expanded:
        all_axes.update(axes)
    for config, _axes in expanded:
        key = cell_key(config, tuple(sorted(all_axes)))
        if key not in seen:  # overlapping grids share cells; each cell runs once
            seen.add(key)
            cells.append(config)
    return {"cells": tuple(cells), "axes": tuple(sorted(all_axes))}


def _parse_tune(tune: Any = None, *, text: str, got: _Fields) -> _Fields:
    if tune is None:
        return {"tune": (), "trials_per_cell": 1}
    if not isinstance(tune, dict):
        raise SpecError(f"tune{_line_of(text, 'tune')}: expected a mapping, got {tune!r}")
    tune = dict(tune)
    trials = tune.pop("trials", 4)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise SpecError(f"tune.trials: must be an integer >= 1, got {trials!r}")
    known = config_fields()
    params = []
    for name, rng in tune.items():
        if name not in known:
            raise SpecError(f"tune.{name}{_line_of(text, name)}: unknown RunConfig field")
        if name in got["axes"] or name in (got["raw"].get("fixed") or {}):
            # the tuned value would replace the cell's own, so a cell labelled lr=0.01 would
            # train at whatever TPE drew
            where = "a grid axis" if name in got["axes"] else "a fixed field"
            raise SpecError(f"tune.{name}{_line_of(text, name)}: {name} is also {where}; a field "
                            f"is either tuned or set by the grid/fixed, so remove it from one")
        if isinstance(rng, list) and rng:
            params.append(TuneParam(name, 0, 0, kind="categorical", choices=tuple(rng)))
            continue
        if not isinstance(rng, dict) or set(rng) - {"low", "high", "log"} or not {"low", "high"} <= set(rng):
            raise SpecError(f"tune.{name}: expected {{low, high, log}} or a list of choices, got {rng!r}")
        low, high, log = rng["low"], rng["high"], bool(rng.get("log", False))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise SpecError(f"tune.{name}: low and high must be numbers, got {low!r}, {high!r}")
        if not low < high or (log and low <= 0):
            raise SpecError(f"tune.{name}: need 0 < low < high for log ranges, low < high otherwise; "
                            f"got low={low}, high={high}")
        kind = "int" if known[name].startswith("int") else "float"
        params.append(TuneParam(name, float(low), float(high), log, kind))
    return {"tune": tuple(params), "trials_per_cell": trials}


def _parse_objective(objective: Any = None, *, text: str, got: _Fields) -> _Fields:
    objective = objective or {}
    if not isinstance(objective, dict) or set(objective) - {"metric", "direction"}:
        raise SpecError(f"objective: expected {{metric, direction}}, got {objective!r}")
    metric = objective.get("metric", SweepSpec.metric)
    if metric not in OBJECTIVE_METRICS:
        raise SpecError(f"objective.metric: {metric!r} is not one of {', '.join(OBJECTIVE_METRICS)}")
    direction = objective.get("direction", "minimize" if "loss" in metric or "ppl" in metric
                              else "maximize")
    if direction not in ("maximize", "minimize"):
        raise SpecError(f"objective.direction: {direction!r}; use maximize or minimize")
    return {"metric": metric, "direction": direction}


def _parse_pruner(pruner: Any = None, *, text: str, got: _Fields) -> _Fields:
    pruner = str(pruner or SweepSpec.pruner).lower()
    if pruner not in PRUNERS:
        raise SpecError(f"pruner: {pruner!r}; use one of {', '.join(PRUNERS)}")
    if pruner != "none" and not got["raw"].get("tune"):
        raise SpecError(f"pruner{_line_of(text, 'pruner')}: {pruner!r} needs a tune section; a pure "
                        "grid is meant to be complete, so it runs every cell to the end")
    return {"pruner": pruner}


def _parse_storage(storage: Any = None, *, text: str, got: _Fields) -> _Fields:
    if storage is not None and not isinstance(storage, str):
        raise SpecError(f"storage: expected a URL string or null, got {storage!r}")
    return {"storage": storage}


def _parse_workers(workers: Any = SweepSpec.workers, *, text: str, got: _Fields) -> _Fields:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise SpecError(f"workers: must be an integer >= 1, got {workers!r}")
    return {"workers": workers}


# The order they run in: fixed, wandb and max_cells before grid (its cells take their values; its
# size is checked first), grid before tune (a tuned field must not be an axis), tune before
# pruner. Error messages list the keys in TOP_KEYS order, as a sweep file is written.
_PARSERS = {
    "study": _parse_study, "description": _parse_description, "fixed": _parse_fixed,
    "wandb": _parse_wandb, "max_cells": _parse_max_cells, "grid": _parse_grid, "tune": _parse_tune,
    "objective": _parse_objective, "pruner": _parse_pruner, "storage": _parse_storage,
    "workers": _parse_workers,
}


def parse_spec(raw: Any, *, text: str = "", path: str | None = None,
               max_cells: int | None = None) -> SweepSpec:
    """The SweepSpec of a sweep file's document; ``max_cells`` (``--max-cells``) overrides the
    file's limit on the grid's cells."""
    if not isinstance(raw, dict):
        raise SpecError(f"a sweep file is a mapping of {', '.join(TOP_KEYS)}; got {type(raw).__name__}")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        k = unknown[0]
        raise SpecError(f"unknown key {k!r}{_line_of(text, k)}; known keys: {', '.join(TOP_KEYS)}")
    got: _Fields = {"raw": raw, "path": path}
    if max_cells is not None:
        if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 1:
            raise SpecError(f"--max-cells: must be an integer >= 1, got {max_cells!r}")
        got["max_cells_override"] = max_cells
    for key, parse in _PARSERS.items():
        got.update(parse(raw[key], text=text, got=got) if key in raw else parse(text=text, got=got))
    del got["fixed"]  # in every cell now
    if got.pop("max_cells_override", None):
        got["max_cells"] = max_cells
    return SweepSpec(**got)


def load_spec(path: str | Path, *, max_cells: int | None = None) -> SweepSpec:
    """The sweep file at ``path``, validated whole; ``max_cells`` overrides its cell limit."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"{p}: no such sweep file (see sweeps/ for examples)")
    try:
        raw, text = read_yaml(p)
    except (OSError, YamlFileError) as err:
        raise SpecError(str(err)) from None
    try:
        return parse_spec(raw, text=text, path=str(p), max_cells=max_cells)
    except SpecError as err:
        raise SpecError(f"{p}: {err}") from None
