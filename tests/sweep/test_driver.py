"""The sweep driver on real Optuna storage, real Lightning training and real W&B offline runs."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from suite.cli import main
from suite.run.result import CONTRACT_FIELDS
from suite.sweep import run_sweep
from suite.sweep.spec import load_spec
from suite.sweep.storage import open_storage

ROOT = Path(__file__).parents[2]
FIXED = {"dataset": "digits", "epochs": 1, "batch_size": 256, "width": 0.5,
         "wandb_mode": "disabled"}


def load(runs: Path, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=open_storage(str(runs / study /
                                                                        "optuna.journal")))


def complete_per_slot(study: optuna.Study) -> collections.Counter:
    return collections.Counter(t.user_attrs["slot"] for t in study.get_trials(deepcopy=False)
                               if t.state == TrialState.COMPLETE)


def test_file_storage_end_to_end_then_resume_is_a_no_op(tmp_path, write_spec, capsys):
    spec = write_spec({"study": "e2e", "fixed": {**FIXED, "wandb_mode": "offline"},
                       "grid": {"model": ["fc"], "precision": ["fp32", 1, "bnn"], "seed": [0, 1]}})
    runs = tmp_path / "runs"
    assert main(["sweep", str(spec), "--runs", str(runs)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["complete"] == 6 and summary["failed"] == 0

    study = load(runs, "e2e")
    assert set(complete_per_slot(study).values()) == {1} and len(complete_per_slot(study)) == 6
    assert study.user_attrs["spec"]["study"] == "e2e" and "grid" in study.user_attrs["spec_yaml"]
    for t in study.trials:
        result, config = t.user_attrs["result"], t.user_attrs["config"]
        assert set(CONTRACT_FIELDS) <= set(result)
        assert result["precision"] == config["precision"] and result["seed"] == config["seed"]
        assert t.value == pytest.approx(result["val_acc"])
        assert len(t.user_attrs["curves"]) == 1 and t.user_attrs["curves"][0]["epoch"] == 1
        assert json.loads((Path(t.user_attrs["run_dir"]) / "result.json").read_text()) == result
    offline = list((runs / "e2e" / "wandb").glob("offline-run-*"))
    assert len(offline) == 6  # one W&B run per trial, under runs/<study>/wandb

    n = len(study.trials)
    assert main(["sweep", str(spec), "--runs", str(runs)]) == 0
    assert len(load(runs, "e2e").trials) == n  # nothing reruns


def test_a_crashing_cell_fails_alone_with_its_error(tmp_path, write_spec):
    # A model far too large for the machine is refused when its run starts (a missing dataset no
    # longer gets that far: the sweep checks every dataset before it creates anything).
    spec = load_spec(write_spec({"study": "crash", "fixed": FIXED, "grid": [
        {"model": ["fc"], "precision": ["fp32", "bnn"]},
        {"model": ["fc"], "width": [1e6], "precision": [1]},
    ]}))
    runs = tmp_path / "runs"
    summary = run_sweep(spec, runs_root=runs)
    assert (summary["complete"], summary["failed"]) == (2, 1)
    failed = [t for t in load(runs, "crash").trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    assert "width=1000000.0" in failed[0].user_attrs["error"]
    assert failed[0].user_attrs["failure"] == "crash"
    # A new command retries a crashed cell (the cause may be fixed), but not forever.
    run_sweep(spec, runs_root=runs)
    run_sweep(spec, runs_root=runs)
    fails = [t for t in load(runs, "crash").trials if t.state == TrialState.FAIL]
    assert len(fails) == 2


def test_tuned_parameters_are_searched_inside_each_cell(tmp_path, write_spec):
    spec = load_spec(write_spec({
        "study": "tuned", "fixed": FIXED,
        "grid": {"model": ["fc"], "precision": ["fp32", 1]},
        "tune": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "trials": 3},
        "pruner": "median",
    }))
    runs = tmp_path / "runs"
    run_sweep(spec, runs_root=runs)
    trials = load(runs, "tuned").trials
    per_cell = collections.Counter(t.user_attrs["cell"] for t in trials
                                   if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    assert sorted(per_cell.values()) == [3, 3]
    lrs = [t.params["lr"] for t in trials]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs) and len(set(lrs)) == 6
    for t in trials:  # the sampled value is the one the run trained with
        assert t.user_attrs["config"]["lr"] == t.params["lr"]


def test_two_workers_run_every_cell_exactly_once(tmp_path, write_spec):
    spec = load_spec(write_spec({
        "study": "pair", "fixed": {**FIXED, "epochs": 3, "width": 1.0},
        "grid": {"model": ["cnn"], "precision": ["fp32", 1, 2, 2.32, "bnn"], "seed": [0, 1]},
    }))
    runs = tmp_path / "runs"
    summary = run_sweep(spec, workers=2, runs_root=runs)
    study = load(runs, "pair")
    per_slot = complete_per_slot(study)
    assert len(per_slot) == 10 and set(per_slot.values()) == {1}
    assert len(study.trials) == 10 and summary["complete"] == 10
    workers = {t.user_attrs["pid"] for t in study.trials}
    assert len(workers) == 2 and os.getpid() not in workers  # two long-lived processes shared it


def _sweep_cmd(spec: Path, runs: Path) -> list[str]:
    return [sys.executable, "-m", "suite", "sweep", str(spec), "--runs", str(runs)]


def _script_cmd(spec: Path, runs: Path) -> list[str]:
    """The installed `bitsweep` script, as a user runs it. (Under `python -m suite`, CPython's
    runpy path now and then ends the process with -SIGINT after main() returned 130: a shell
    shows that as 130 too, but Popen does not.)"""
    script = Path(sys.executable).with_name("bitsweep")
    assert script.exists(), f"{script}: the package is not installed in this environment"
    return [str(script), "sweep", str(spec), "--runs", str(runs)]


def test_killed_worker_then_rerun_completes_every_cell_once(tmp_path, write_spec):
    spec = write_spec({
        "study": "killed", "fixed": {**FIXED, "epochs": 4, "width": 1.0},
        "grid": {"model": ["cnn"], "precision": ["fp32", 1, 2.32, "bnn"], "seed": [0]},
    })
    runs = tmp_path / "runs"
    env = {**os.environ, "CI": "true", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(_script_cmd(spec, runs), cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = runs / "killed" / "optuna.journal"
    deadline = time.time() + 120
    kept: set[int] = set()
    try:
        while time.time() < deadline:
            if journal.exists() and proc.poll() is None:
                states = {t.number: t.state for t in load(runs, "killed").trials}
                kept = {n for n, s in states.items() if s == TrialState.COMPLETE}
                if kept and TrialState.RUNNING in states.values():
                    break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never had a finished and a running trial at once")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    rerun = subprocess.run(_sweep_cmd(spec, runs), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    study = load(runs, "killed")
    per_slot = complete_per_slot(study)
    assert len(per_slot) == 4 and set(per_slot.values()) == {1}
    states = {t.number: t.state for t in study.trials}
    assert all(states[n] == TrialState.COMPLETE for n in kept)  # nothing finished was lost
    lost = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(lost) == 1 and lost[0].user_attrs["failure"] == "lost"


def test_editing_a_fixed_value_queues_new_runs_and_keeps_the_old(tmp_path, write_spec):
    raw = {"study": "edit", "fixed": FIXED, "grid": {"model": ["fc"], "precision": ["fp32", 1]}}
    runs = tmp_path / "runs"
    run_sweep(load_spec(write_spec(raw)), runs_root=runs)
    raw["fixed"] = {**FIXED, "epochs": 2}
    summary = run_sweep(load_spec(write_spec(raw)), runs_root=runs, extend=True)
    trials = load(runs, "edit").trials
    assert sorted(t.user_attrs["config"]["epochs"] for t in trials) == [1, 1, 2, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials) and summary["complete"] == 4


def test_adding_a_grid_with_a_new_axis_keeps_every_finished_cell(tmp_path, write_spec):
    """A second grid that varies a field the first did not (here conv_norm) renames every cell's
    readable key; the finished runs must still count, and only the new cells run."""
    raw = {"study": "grow", "fixed": FIXED, "grid": [{"model": ["fc"], "precision": ["fp32", 1]}]}
    runs = tmp_path / "runs"
    run_sweep(load_spec(write_spec(raw)), runs_root=runs)
    raw["grid"].append({"model": ["cnn"], "precision": ["bnn"], "conv_norm": ["c"]})
    summary = run_sweep(load_spec(write_spec(raw)), runs_root=runs, extend=True)
    trials = load(runs, "grow").trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert summary["trials"] == 3 and summary["complete"] == 3


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path, write_spec):
    spec = write_spec({
        # Trials of a few seconds: the Ctrl-C must land inside one, not after the last (a
        # signal during interpreter shutdown ends the process with -SIGINT, nothing lost).
        "study": "ctrlc", "fixed": {**FIXED, "epochs": 40, "width": 1.0},
        "grid": {"model": ["cnn"], "precision": ["fp32", 1, "bnn"], "seed": [0]},
    })
    runs = tmp_path / "runs"
    env = {**os.environ, "CI": "true", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(_script_cmd(spec, runs), cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = runs / "ctrlc" / "optuna.journal"
    deadline = time.time() + 120
    while time.time() < deadline:
        running = [t for t in load(runs, "ctrlc").trials
                   if t.state == TrialState.RUNNING] if journal.exists() else []
        # The objective is reported after every epoch: from the first on, the fit runs.
        if running and running[0].intermediate_values:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    time.sleep(0.5)  # inside the fit
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the whole group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume" in err and json.loads(out.strip().splitlines()[-1])["interrupted"] is True
    stopped = [t for t in load(runs, "ctrlc").trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1 and stopped[0].user_attrs["failure"] == "interrupted"

    rerun = subprocess.run(_sweep_cmd(spec, runs), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    per_slot = complete_per_slot(load(runs, "ctrlc"))
    assert len(per_slot) == 3 and set(per_slot.values()) == {1}


def test_a_ctrl_c_that_a_library_swallowed_still_stops_the_worker(tmp_path, write_spec):
    """Our SIGINT handler sets a flag before raising; if something between us and the signal
    swallows the KeyboardInterrupt, the worker stops before claiming the next trial."""
    from suite.sweep import workers
    from suite.sweep.queue import queue_lock, sync_queue
    from suite.sweep.study import open_study

    spec = load_spec(write_spec({"study": "swallow", "fixed": FIXED,
                                 "grid": {"model": ["fc"], "precision": ["fp32", 1]}}))
    url = str(tmp_path / "runs" / "swallow" / "optuna.journal")
    study = open_study(spec, url)
    with queue_lock(url):
        sync_queue(study, spec, retry_crashed=True)
    previous = workers.catch_stop_signals()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # as a library's blanket except would
            signal.raise_signal(signal.SIGINT)
        plan = workers.WorkerPlan(spec=spec, url=url, runs_root=str(tmp_path / "runs"),
                                 threads=1, limit=None, grace=60.0)
        with pytest.raises(KeyboardInterrupt):
            workers.work(plan)
    finally:
        workers.restore_signals(previous)
        workers._INTERRUPTED.clear()
    states = [t.state for t in load(tmp_path / "runs", "swallow").trials]
    assert states == [TrialState.WAITING, TrialState.WAITING]  # nothing claimed, nothing lost
