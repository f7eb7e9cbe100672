"""The W&B path for the same study: an exported sweep config, and the program its agent calls.

W&B sweeps need a W&B server, so Optuna drives sweeps by default; a user who has a server runs

    bitsweep wandb-sweep sweeps/x.yaml --out sweep.yaml && wandb sweep sweep.yaml && wandb agent ID

The exported config is a grid over the spec's axes — one config per grid when the spec is a union of
grids (W&B grids are full factorials), each naming its grid with a constant ``grid`` parameter — so
the W&B UI shows the same axes as the report. Its command runs ``bitsweep agent-run SPEC
--key=value ...`` with paths relative to the directory it was exported from (the repository root),
so the file works on any machine with a clone: one configuration,
validated by the same spec code, trained by the same ``train``, recorded in the same Optuna storage
as a ``bitsweep sweep`` trial, so ``bitsweep report`` reads both paths alike. W&B grids take only
discrete values, so each tuned parameter becomes ``trials`` evenly spaced values of its range.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from suite.run.config import ConfigError, RunConfig
from suite.run.files import CURVES_NAME
from suite.sweep.checksum import CHECKSUM_ATTR, record_checksum
from suite.sweep.spec import SpecError, SweepSpec, TuneParam, load_spec, parse_spec


def _tune_values(param: TuneParam, count: int) -> list[Any]:
    if param.kind == "categorical":
        return list(param.choices)
    space = np.geomspace if param.log else np.linspace
    values = space(param.low, param.high, count)
    if param.kind == "int":
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.6g}") for v in values]


def _grids(spec: SweepSpec) -> list[dict[str, list[Any]]]:
    grid = spec.raw.get("grid")
    return [dict(g) for g in (grid if isinstance(grid, list) else [grid])]


def _portable(path: str | Path) -> str:
    """``path`` relative to the current directory when it lies under it (an absolute path names
    one machine's folders), as POSIX text."""
    path = Path(path)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            return path.as_posix()
    return path.as_posix()


def wandb_sweep_configs(spec: SweepSpec, *, runs_root: Path = Path("runs")) -> list[dict[str, Any]]:
    """W&B sweep configs (method grid) equivalent to ``spec``: one per grid of the spec."""
    grids = _grids(spec)
    spec_path = _portable(spec.path) if spec.path else f"sweeps/{spec.study}.yaml"
    configs = []
    for index, grid in enumerate(grids):
        parameters: dict[str, Any] = {"grid": {"value": index}} if len(grids) > 1 else {}
        parameters.update({name: {"values": list(values)} for name, values in grid.items()})
        for param in spec.tune:
            parameters[param.name] = {"values": _tune_values(param, spec.trials_per_cell)}
        name = spec.study if len(grids) == 1 else f"{spec.study}-grid{index}"
        configs.append({
            "name": name,
            "description": spec.description or f"bitsweep study {spec.study}",
            "method": "grid",
            "metric": {"name": spec.metric, "goal": spec.direction},
            "parameters": parameters,
            "command": ["${env}", "${interpreter}", "-m", "suite", "agent-run", spec_path,
                        "--runs", _portable(runs_root), "${args}"],
        })
    return configs


def parse_agent_args(extra: list[str]) -> dict[str, Any]:
    """``--key=value`` (as the W&B agent writes them) or ``--key value`` -> typed values."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; the agent passes --key=value")
        key, eq, text = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                raise ConfigError(f"--{key} needs a value")
            i += 1
            text = extra[i]
        values[key.replace("-", "_")] = yaml.safe_load(text)
        i += 1
    return values


def config_for(spec: SweepSpec, params: dict[str, Any]) -> tuple[RunConfig, str]:
    """The RunConfig and cell key of one agent call, checked by the spec's own validation."""
    params = dict(params)
    tuned = {p.name: params.pop(p.name) for p in spec.tune if p.name in params}
    grids = _grids(spec)
    if "cell" in params:  # configs exported before grids were named: a cell index
        index = params.pop("cell")
        if not isinstance(index, int) or not 0 <= index < len(spec.cells):
            raise SpecError(f"cell={index!r}: the study has cells 0..{len(spec.cells) - 1}")
        config = spec.cells[index]
    else:
        index = params.pop("grid", 0 if len(grids) == 1 else None)
        if not isinstance(index, int) or not 0 <= index < len(grids):
            raise SpecError(f"grid={index!r}: study {spec.study!r} has grids "
                            f"0..{len(grids) - 1}; pass --grid=<index> with the grid's axes")
        grid = grids[index]
        unknown = sorted(set(params) - set(grid))
        if unknown:
            raise SpecError(f"{', '.join(unknown)}: not an axis of study {spec.study!r} "
                            f"(axes: {', '.join(grid)})")
        missing = sorted(set(grid) - set(params))
        if missing:
            raise SpecError(f"missing value for axis {', '.join(missing)}")
        for key, value in list(params.items()):
            params[key] = _grid_value(key, value, grid[key])
        one = {**spec.raw, "grid": {k: [v] for k, v in params.items()}}
        one.pop("tune", None)
        one.pop("pruner", None)
        config = parse_spec(one).cells[0]
    cell = spec.key(config)
    if tuned:
        config = RunConfig.from_dict({**config.to_dict(), **tuned})
    return config, cell


def _grid_value(key: str, value: Any, values: list[Any]) -> Any:
    """The grid's own value for what the agent passed: W&B writes a value quoted in the sweep file
    ("1.58") bare (--precision=1.58), which reads back as a float."""
    if value in values:
        return value
    same = [v for v in values if str(v) == str(value)]
    if len(same) == 1:
        return same[0]
    raise SpecError(f"{key}={value!r} is not in the study's grid {values!r}")


def agent_run(spec_path: str | Path, extra: list[str], *, runs_root: Path = Path("runs"),
              storage: str | None = None) -> dict[str, Any]:
    """Train one configuration for a W&B agent and store it like a sweep trial."""
    import optuna

    from suite.run.train import train
    from suite.sweep.driver import _monitor_metric, _read_curves, open_study
    from suite.sweep.queue import storage_url
    from suite.sweep.studyspec import record_spec

    spec = load_spec(spec_path)
    given = parse_agent_args(extra)
    config, cell = config_for(spec, given)
    url = storage_url(spec, storage, Path(runs_root))
    study = open_study(spec, url)
    # before training: an agent started from another sweep file under the same study name is
    # refused as `bitsweep sweep` would refuse it, not merged into the study
    record_spec(study, spec, url, extend=False)
    study_dir = Path(runs_root) / spec.study
    run_id = os.environ.get("WANDB_RUN_ID") or f"{int(time.time() * 1000):x}"
    run_dir = study_dir / "wandb-sweep" / run_id
    result = train(config, run_dir, wandb_dir=study_dir, run_name=f"{spec.study}/{run_id}",
                   progress=False)
    value = result.get(spec.metric)
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    curves = _read_curves(run_dir / CURVES_NAME)
    params, distributions = _agent_params(study, spec, config, given)
    # the objective per epoch at the 0-based steps the sweep's reporter uses, so the dashboard
    # draws an agent's learning curve beside the sweep's
    monitor = _monitor_metric(spec.metric)
    steps = {int(row["epoch"]) - 1: row[monitor] for row in curves
             if row.get(monitor) is not None and math.isfinite(row[monitor])}
    study.add_trial(optuna.trial.create_trial(
        value=float(value) if ok else (-math.inf if spec.direction == "maximize" else math.inf),
        params=params, distributions=distributions, intermediate_values=steps,
        user_attrs={"config": config.to_dict(), "result": result, "cell": cell,
                    "curves": curves, "source": "wandb-agent",
                    "diverged": bool(result.get("diverged")), "run_dir": str(run_dir),
                    "host": socket.gethostname(),
                    CHECKSUM_ATTR: record_checksum(slot=None, cell=cell, config=config.to_dict(),
                                                   result=result)},
    ))
    return result


def _agent_params(study: Any, spec: SweepSpec, config: RunConfig,
                  given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An agent run's Optuna params, as a sweep trial records them: its grid axes and the tuned
    values the agent passed, each under its distribution (a value outside it is left out)."""
    from suite.sweep.driver import axis_params
    from suite.sweep.tuning import distribution

    values = config.to_dict()
    distributions: dict[str, Any] = dict(axis_params(study, spec, values))
    distributions.update({p.name: distribution(p) for p in spec.tune if p.name in given})
    params = {}
    for name, dist in list(distributions.items()):
        try:
            inside = dist._contains(dist.to_internal_repr(values[name]))  # noqa: SLF001
        except ValueError:
            inside = False
        if inside:
            params[name] = values[name]
        else:
            del distributions[name]
    return params, distributions
