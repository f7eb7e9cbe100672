"""The W&B path: the exported sweep config's command, filled in as `wandb agent` fills it,
trains the same RunResult as `bitsweep train` and lands in the same study storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from suite.cli import main
from suite.sweep.checksum import verify
from suite.sweep.spec import SpecError, load_spec
from suite.sweep.storage import open_storage
from suite.sweep.study import open_study
from suite.sweep.studyspec import SPEC_HASHES_ATTR, record_spec, spec_hash
from suite.sweep.wandb import config_for, wandb_sweep_configs

ROOT = Path(__file__).parents[2]
RAW = {"study": "wb", "fixed": {"dataset": "digits", "epochs": 2, "batch_size": 256},
       "grid": {"model": ["fc"], "bits": [1, 2], "zero": [False, True], "seed": [0, 1]},
       "wandb": {"mode": "offline", "project": "bitsweep-test"}}
METRICS = ("train_loss", "val_loss", "val_acc", "test_acc", "best_val_acc", "flip_rate",
           "params", "params_quantized", "quantized_bytes")


def agent_command(template: list[str], params: dict) -> list[str]:
    """What the W&B agent executes: ${env} -> /usr/bin/env, ${interpreter} -> python,
    ${args} -> --key=value per parameter (str() of the value, as the agent writes it)."""
    out: list[str] = []
    for part in template:
        if part == "${env}":
            out.append("/usr/bin/env")
        elif part == "${interpreter}":
            out.append(sys.executable)
        elif part == "${args}":
            out.extend(f"--{k}={v}" for k, v in params.items())
        else:
            out.append(part)
    return out


def test_exported_config_is_a_grid_over_the_spec_axes(tmp_path, write_spec, capsys):
    spec_path = write_spec(RAW)
    out = tmp_path / "wb.yaml"
    assert main(["wandb-sweep", str(spec_path), "--out", str(out), "--runs", "r"]) == 0
    config = yaml.safe_load(out.read_text())
    assert config["method"] == "grid"
    assert config["metric"] == {"name": "val_acc", "goal": "maximize"}
    assert config["parameters"]["bits"] == {"values": [1, 2]}
    assert config["parameters"]["zero"] == {"values": [False, True]}
    assert "${args}" in config["command"] and "agent-run" in config["command"]
    # Every W&B grid point maps to one spec cell, and back.
    spec = load_spec(spec_path)
    keys = {config_for(spec, {"model": "fc", "bits": b, "zero": z, "seed": s})[1]
            for b in (1, 2) for z in (False, True) for s in (0, 1)}
    assert keys == {spec.key(c) for c in spec.cells}


def test_tuned_parameters_become_discrete_values(write_spec):
    spec = load_spec(write_spec({**RAW, "tune": {"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                                 "trials": 3}}))
    values = wandb_sweep_configs(spec)[0]["parameters"]["lr"]["values"]
    assert values == pytest.approx([1e-4, 1e-3, 1e-2])


def test_agent_command_trains_the_same_result_as_bitsweep_train(tmp_path, write_spec):
    spec_path = write_spec(RAW)
    runs = tmp_path / "runs"
    config, = wandb_sweep_configs(load_spec(spec_path), runs_root=runs)
    env = {**os.environ, "CI": "true", "WANDB_MODE": "offline", "WANDB_RUN_ID": "agent1"}
    cmd = agent_command(config["command"], {"model": "fc", "bits": 2, "zero": True, "seed": 1})
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    agent = json.loads((runs / "wb" / "wandb-sweep" / "agent1" / "result.json").read_text())

    direct = tmp_path / "direct"
    assert main(["train", "--model", "fc", "--dataset", "digits", "--precision", "2.32",
                 "--epochs", "2", "--batch-size", "256", "--seed", "1",
                 "--wandb-mode", "disabled", "--wandb-project", "bitsweep-test",
                 "--out", str(direct)]) == 0
    ref = json.loads((direct / "result.json").read_text())
    assert agent["precision"] == "2.32" and agent["levels"] == 5 and agent["zero"] is True
    for key in METRICS:
        assert agent[key] == pytest.approx(ref[key], rel=1e-6), key
    # Recorded in the study like a sweep trial, so `bitsweep report` reads both paths.
    study = optuna.load_study(study_name="wb",
                              storage=open_storage(str(runs / "wb" / "optuna.journal")))
    (trial,) = study.trials
    assert trial.user_attrs["result"]["val_acc"] == agent["val_acc"]
    assert trial.user_attrs["source"] == "wandb-agent"
    assert study.user_attrs[SPEC_HASHES_ATTR] == [spec_hash(load_spec(spec_path))]
    assert verify(trial.user_attrs) is True  # its result carries the checksum the report checks
    assert list((runs / "wb" / "wandb").glob("offline-run-*"))
    # its grid values as params and its objective per epoch, as a sweep trial has them, so
    # optuna-dashboard shows agent runs in the same views
    assert trial.params == {"model": "fc", "precision": "2.32", "seed": 1}
    assert trial.distributions["precision"].choices == ("1", "1.58", "2", "2.32")
    curves = trial.user_attrs["curves"]
    assert trial.intermediate_values == {int(r["epoch"]) - 1: r["val_acc"] for r in curves}
    assert len(trial.intermediate_values) == 2


def test_agent_rejects_values_outside_the_grid(write_spec):
    spec = load_spec(write_spec(RAW))
    with pytest.raises(ValueError, match="bits=3"):
        config_for(spec, {"model": "fc", "bits": 3, "zero": False, "seed": 0})
    with pytest.raises(ValueError, match="missing value for axis seed"):
        config_for(spec, {"model": "fc", "bits": 1, "zero": False})


def test_an_agents_tuned_value_is_recorded_under_the_distribution_the_sweep_uses(write_spec,
                                                                                  tmp_path):
    from suite.run.config import RunConfig
    from suite.sweep.driver import open_study
    from suite.sweep.tuning import distribution, suggest
    from suite.sweep.wandb import _agent_params

    spec = load_spec(write_spec({**RAW, "tune": {"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                                 "trials": 3}}))
    study = open_study(spec, str(tmp_path / "s.journal"))
    trial = study.ask()
    suggest(trial, spec.tune[0])
    assert trial.distributions["lr"] == distribution(spec.tune[0])  # the one definition agrees
    config = RunConfig(model="fc", dataset="digits", precision="1", seed=0, lr=1e-3)
    params, dists = _agent_params(study, spec, config, {"lr": 1e-3})
    assert params == {"model": "fc", "precision": "1", "seed": 0, "lr": 1e-3}
    assert dists["lr"] == distribution(spec.tune[0])
    outside = config.replace(lr=0.5)  # not in the tuned range: left out, not an error
    assert "lr" not in _agent_params(study, spec, outside, {"lr": 0.5})[0]


def test_a_union_of_grids_exports_each_grids_axes_with_portable_paths(tmp_path, monkeypatch,
                                                                      capsys):
    """The default study is a union of grids: W&B shows their axes (not one opaque `cell`), every
    W&B grid point is one spec cell and every cell is one point, and the command names the sweep
    file and runs folder as a clone on another machine has them."""
    import itertools

    monkeypatch.chdir(ROOT)
    out = tmp_path / "sweep.yaml"
    assert main(["wandb-sweep", "sweeps/default.yaml", "--out", str(out)]) == 0
    spec = load_spec("sweeps/default.yaml")
    grids = spec.raw["grid"]
    files = sorted(tmp_path.glob("sweep-grid*.yaml"))
    assert len(files) == len(grids) > 1 and not out.exists()
    keys = []
    for index, path in enumerate(files):
        config = yaml.safe_load(path.read_text())
        params = config["parameters"]
        assert params.pop("grid") == {"value": index}
        assert params == {axis: {"values": list(v)} for axis, v in grids[index].items()}
        assert "cell" not in params
        command = config["command"]
        assert command[command.index("agent-run") + 1:][:3] == ["sweeps/default.yaml", "--runs",
                                                                 "runs"]
        assert not any(str(part).startswith("/") for part in command)
        for values in itertools.product(*(v["values"] for v in params.values())):
            keys.append(config_for(spec, {"grid": index, **dict(zip(params, values))})[1])
    assert sorted(keys) == sorted(spec.key(c) for c in spec.cells)


def test_an_agent_call_names_an_existing_grid(write_spec):
    spec = load_spec(write_spec({**RAW, "grid": [RAW["grid"], {"model": ["cnn"], "seed": [0]}]}))
    with pytest.raises(SpecError, match="grid=5"):
        config_for(spec, {"grid": 5, "model": "cnn", "seed": 0})
    assert config_for(spec, {"grid": 1, "model": "cnn", "seed": 0})[0].model == "cnn"


def test_a_value_quoted_in_the_sweep_file_is_found_when_the_agent_passes_it_bare(write_spec):
    """W&B passes `--precision=1.58` for a grid value written "1.58": YAML reads it back as a float."""
    from suite.sweep.wandb import parse_agent_args

    spec = load_spec(write_spec({**RAW, "grid": {"model": ["fc"], "precision": ["1.58", "fp32"],
                                                 "seed": [0]}}))
    given = parse_agent_args(["--model=fc", "--precision=1.58", "--seed=0"])
    config, cell = config_for(spec, given)
    assert config.precision == "1.58" and cell == spec.key(spec.cells[0])
    with pytest.raises(SpecError, match="precision=2.5"):
        config_for(spec, parse_agent_args(["--model=fc", "--precision=2.5", "--seed=0"]))


def test_an_agent_of_another_sweep_file_under_the_same_study_is_refused_before_training(
        tmp_path, write_spec, capsys):
    """A W&B agent started from a sweep file whose grid differs from the study's is refused as
    `bitsweep sweep` refuses it (exit 2, the two ways on named), before anything trains."""
    runs = tmp_path / "runs"
    first = load_spec(write_spec(RAW))
    url = str(runs / "wb" / "optuna.journal")
    record_spec(open_study(first, url), first, url, extend=False)
    other = write_spec({**RAW, "grid": {**RAW["grid"], "seed": [0, 1, 2]}}, name="other.yaml")
    code = main(["agent-run", str(other), "--runs", str(runs),
                 "--model=fc", "--bits=1", "--zero=False", "--seed=2"])
    assert code == 2
    assert "--extend" in capsys.readouterr().err
    assert not (runs / "wb" / "wandb-sweep").exists()  # nothing trained
    study = optuna.load_study(study_name="wb", storage=open_storage(url))
    assert study.trials == []
    assert study.user_attrs[SPEC_HASHES_ATTR] == [spec_hash(first)]
