"""What optuna-dashboard shows of a sweep: every trial's grid values as params (categorical over
the axis's values) and its objective per epoch as intermediate values. Real sweeps, real Optuna
storage, real Lightning training, and the real optuna-dashboard server on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from suite.run.config import RunConfig
from suite.sweep import run_sweep
from suite.sweep.driver import _epoch_callbacks
from suite.sweep.spec import parse_spec
from suite.sweep.storage import open_storage

EPOCHS = 2
FIXED = {"model": "fc", "dataset": "digits", "epochs": EPOCHS, "batch_size": 256,
         "wandb_mode": "disabled"}
# listed out of order on purpose: the choices keep the spec's order; seed is a one-value axis
GRID = {"precision": ["fp32", 1], "width": [0.5, 0.25], "seed": [3]}


@dataclass
class Swept:
    journal: Path
    study: optuna.Study


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Swept:
    runs = tmp_path_factory.mktemp("dashboard") / "runs"
    spec = parse_spec({"study": "dash", "fixed": FIXED, "grid": GRID})
    summary = run_sweep(spec, runs_root=runs)
    assert summary["complete"] == 4 and summary["failed"] == 0
    journal = runs / "dash" / "optuna.journal"
    return Swept(journal, optuna.load_study(study_name="dash", storage=open_storage(str(journal))))


def test_every_trial_records_its_grid_values_as_categorical_params(swept):
    trials = swept.study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert t.distributions == {"precision": CategoricalDistribution(["fp32", "1"]),
                                   "width": CategoricalDistribution([0.5, 0.25]),
                                   "seed": CategoricalDistribution([3])}
        config = t.user_attrs["config"]
        assert t.params == {axis: config[axis] for axis in GRID}  # the values it trained with
        assert type(t.params["width"]) is float and type(t.params["seed"]) is int
    cells = {(t.params["precision"], t.params["width"]) for t in trials}
    assert cells == {("fp32", 0.5), ("fp32", 0.25), ("1", 0.5), ("1", 0.25)}


def test_every_trial_reports_its_objective_at_each_epoch(swept):
    for t in swept.study.get_trials():
        curves = t.user_attrs["curves"]
        assert [row["epoch"] for row in curves] == list(range(1, EPOCHS + 1))
        # step = the 0-based epoch, as Optuna's Lightning pruning callback reported it
        assert t.intermediate_values == {e: row["val_acc"] for e, row in enumerate(curves)}
        assert t.value == t.intermediate_values[EPOCHS - 1]


def test_a_grown_grid_records_what_the_study_first_recorded(tmp_path, capsys):
    """Optuna fixes a param's choices at its first record in a study: a value the old grid had
    is recorded under the old choices, a new value is not recorded, and its trial still runs."""
    runs = tmp_path / "runs"
    one = {"study": "grown", "fixed": {**FIXED, "epochs": 1}, "grid": {"precision": ["fp32"]}}
    run_sweep(parse_spec(one), runs_root=runs)
    grown = {**one, "grid": {"precision": [1, "fp32"]}}
    summary = run_sweep(parse_spec(grown), runs_root=runs, extend=True)
    assert summary["complete"] == 2
    study = optuna.load_study(study_name="grown",
                              storage=open_storage(str(runs / "grown" / "optuna.journal")))
    first, second = study.get_trials()
    assert first.params == {"precision": "fp32"}
    assert first.distributions["precision"] == CategoricalDistribution(["fp32"])
    assert second.user_attrs["config"]["precision"] == "1" and second.params == {}
    assert len(second.intermediate_values) == 1
    assert "precision='1' is not recorded as an Optuna param" in capsys.readouterr().err


def _curves(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "curves.csv").open() as fh:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(fh)]


def test_the_epoch_callback_prunes_only_when_the_spec_has_a_pruner(tmp_path):
    from suite.run.train import train

    tuned = {"study": "cb", "fixed": {**FIXED, "epochs": 3}, "grid": {"precision": ["fp32"]},
             "tune": {"lr": [1e-3], "trials": 1}}
    config = RunConfig.from_dict({**FIXED, "epochs": 3})

    def study() -> optuna.Study:  # val_acc never reaches 2: prunes at the first step past warm-up
        return optuna.create_study(direction="maximize",
                                   pruner=optuna.pruners.ThresholdPruner(lower=2.0, n_warmup_steps=1))

    pruning = study()
    trial = pruning.ask()
    spec = parse_spec({**tuned, "pruner": "median"})
    with pytest.raises(optuna.TrialPruned):
        train(config, tmp_path / "pruned", callbacks=_epoch_callbacks(trial, spec), progress=False)
    reported = pruning.trials[0].intermediate_values
    assert list(reported) == [0, 1]  # pruned at validation end, before the epoch's curves row
    assert [reported[0]] == [row["val_acc"] for row in _curves(tmp_path / "pruned")]

    reporting = study()
    trial = reporting.ask()
    spec = parse_spec({**tuned, "pruner": "none", "objective": {"metric": "train_loss"}})
    train(config, tmp_path / "kept", callbacks=_epoch_callbacks(trial, spec), progress=False)
    # every epoch, the training loss of that epoch (the module publishes it after validation)
    assert reporting.trials[0].intermediate_values == {
        e: row["train_loss"] for e, row in enumerate(_curves(tmp_path / "kept"))}
    assert len(reporting.trials[0].intermediate_values) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1 only
        return json.loads(response.read())


def _wait_for_api(url: str, proc: subprocess.Popen, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"optuna-dashboard exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            return _get(url)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(f"optuna-dashboard did not answer {url} within {seconds:.0f} s")


def test_optuna_dashboard_serves_the_params_and_learning_curves(swept):
    """The README's command, `optuna-dashboard runs/<study>/optuna.journal`, read over its API."""
    exe = Path(sys.executable).with_name("optuna-dashboard")
    assert exe.exists(), f"{exe}: install the dev extra (pip install -e '.[dev]')"
    port = _free_port()
    proc = subprocess.Popen([str(exe), str(swept.journal), "--host", "127.0.0.1", "--port",
                             str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        studies = _wait_for_api(base, proc)["study_summaries"]
        (study_id,) = [s["study_id"] for s in studies if s["study_name"] == "dash"]
        detail = _get(f"{base}/{study_id}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert detail["has_intermediate_values"] is True
    space = {p["name"]: p["distribution"] for p in detail["intersection_search_space"]}
    assert set(space) == set(GRID)
    assert space["width"]["type"] == "CategoricalDistribution"
    assert [c["value"] for c in space["width"]["choices"]] == ["0.5", "0.25"]
    assert len(detail["trials"]) == 4
    for trial in detail["trials"]:
        assert {p["name"] for p in trial["params"]} == set(GRID)
        assert [v["step"] for v in trial["intermediate_values"]] == list(range(EPOCHS))
