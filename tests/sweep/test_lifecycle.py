"""A sweep's life on real processes, storage and training: a half-done study does not look done,
a signal to the sweep's process alone stops its workers, and the workers fit the machine."""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from suite.cli import main
from suite.sweep.storage import open_storage

ROOT = Path(__file__).parents[2]
FIXED = {"dataset": "digits", "epochs": 1, "batch_size": 256, "width": 0.5,
         "wandb_mode": "disabled"}
ENV = {**os.environ, "CI": "true", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}


def load(runs: Path, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study,
                             storage=open_storage(str(runs / study / "optuna.journal")))


def complete_per_slot(study: optuna.Study) -> collections.Counter:
    return collections.Counter(t.user_attrs["slot"] for t in study.get_trials(deepcopy=False)
                               if t.state == TrialState.COMPLETE)


def bitsweep(*args: str) -> list[str]:
    """The installed `bitsweep` script, as a user (or a job scheduler) runs it."""
    script = Path(sys.executable).with_name("bitsweep")
    assert script.exists(), f"{script}: the package is not installed in this environment"
    return [str(script), *args]


def wait_for(proc: subprocess.Popen, runs: Path, study: str, ready, what: str,
             timeout: float = 180) -> list[optuna.trial.FrozenTrial]:
    """Poll the study (a state to observe, not a race to order) until ``ready(running trials)``."""
    journal = runs / study / "optuna.journal"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        if journal.exists():
            running = [t for t in load(runs, study).trials if t.state == TrialState.RUNNING]
            if ready(running):
                return running
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the sweep never had {what}")


def in_fit(trial: optuna.trial.FrozenTrial) -> bool:
    # The objective is reported after every epoch: from the first on, the fit runs.
    return bool(trial.intermediate_values)


def test_a_failed_trial_leaves_the_sweep_undone_until_the_named_command_resumes_it(
        tmp_path, write_spec, capsys):
    spec = write_spec({"study": "half", "fixed": FIXED,
                       "grid": {"model": ["fc"], "precision": ["fp32", 1, "bnn"]}})
    runs = tmp_path / "runs"
    # A file where trial 1's run directory goes: that trial fails as on a full or read-only
    # disk; the others run.
    blocked = runs / "half" / "trials" / "t00001"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")
    argv = ["sweep", str(spec), "--runs", str(runs)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "bitsweep sweep: 1 of 3 trials of the spec not done: 1 failed." in err
    command = err.split("Resume them with: ")[1].splitlines()[0]
    assert shlex.split(command) == ["bitsweep", *argv]  # the exact command, runnable as it is

    assert main(shlex.split(command)[1:]) == 0
    assert "not done" not in capsys.readouterr().err
    per_slot = complete_per_slot(load(runs, "half"))
    assert len(per_slot) == 3 and set(per_slot.values()) == {1}


def test_workers_that_die_leave_the_sweep_undone_and_a_rerun_completes_it(tmp_path, write_spec):
    spec = write_spec({"study": "dead", "fixed": {**FIXED, "epochs": 40, "width": 1.0},
                       "grid": {"model": ["cnn"], "precision": ["fp32", 1, "bnn"]}})
    runs = tmp_path / "runs"
    proc = subprocess.Popen(bitsweep("sweep", str(spec), "--runs", str(runs), "--workers", "2"),
                            cwd=ROOT, env=ENV, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        running = wait_for(proc, runs, "dead", lambda ts: len(ts) == 2 and all(map(in_fit, ts)),
                           "both workers in a fit")
        for t in running:  # as the OOM killer or a full disk's crash would end them
            os.kill(t.user_attrs["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err
    assert "3 of 3 trials of the spec not done: 3 not finished" in err
    command = err.split("Resume them with: ")[1].splitlines()[0]
    assert shlex.split(command)[1:] == ["sweep", str(spec), "--runs", str(runs), "--workers", "2"]

    rerun = subprocess.run(bitsweep(*shlex.split(command)[1:]), cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "not done" not in rerun.stderr
    per_slot = complete_per_slot(load(runs, "dead"))
    assert len(per_slot) == 3 and set(per_slot.values()) == {1}


@pytest.mark.parametrize(("signum", "workers"), [(signal.SIGINT, 2), (signal.SIGTERM, 2),
                                                 (signal.SIGTERM, 1)],
                         ids=["SIGINT", "SIGTERM", "SIGTERM-inline"])
def test_a_signal_to_the_sweep_alone_stops_its_workers(tmp_path, write_spec, signum, workers):
    """`kill -INT <pid>` / `kill -TERM <pid>` of the sweep's process only, as a job scheduler
    sends it (no terminal signals the workers): every worker interrupts its trial, records it as
    a Ctrl-C does, and claims nothing new; the sweep exits at once, 128 + the signal."""
    spec = write_spec({"study": "sched", "fixed": {**FIXED, "epochs": 20, "width": 1.0},
                       "grid": {"model": ["cnn"], "precision": ["fp32", 1, 2, "bnn"],
                                "seed": [0, 1]}})
    runs, exec_log = tmp_path / "runs", tmp_path / "exec.log"
    proc = subprocess.Popen(bitsweep("sweep", str(spec), "--runs", str(runs), "--workers",
                                     str(workers)),
                            cwd=ROOT, env={**ENV, "BITSWEEP_EXEC_LOG": str(exec_log)},
                            start_new_session=True,  # its own group: nothing else is signalled
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(proc, runs, "sched", lambda ts: any(map(in_fit, ts)), "a trial in its fit")
        sent = time.time()
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=120)
        took = time.time() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert took < 20, f"the sweep took {took:.0f} s to stop"
    trials = load(runs, "sched").trials
    claimed = {t.number: t.datetime_start.timestamp() for t in trials if t.datetime_start}
    # A worker between two trials may claim in the instant the signal takes to reach it.
    late = [n for n, start in claimed.items() if start > sent + 1.0]
    assert not late, f"trials {late} started after the signal"
    started = [int(line.split("\t")[1]) for line in exec_log.read_text().splitlines()]
    assert len(started) == len(set(started)) and set(started) <= set(claimed)
    states = collections.Counter(t.state for t in trials)
    assert states[TrialState.RUNNING] == 0, err  # every worker recorded its trial before it exited
    interrupted = [t for t in trials if t.user_attrs.get("failure") == "interrupted"]
    assert 1 <= len(interrupted) <= workers
    assert states[TrialState.WAITING] >= 8 - len(started)  # the rest of the queue is kept


def test_zero_workers_on_the_command_line_is_refused_like_in_the_file(tmp_path, write_spec,
                                                                      capsys):
    spec = write_spec({"study": "none", "fixed": FIXED, "grid": {"model": ["fc"]}})
    runs = tmp_path / "runs"
    assert main(["sweep", str(spec), "--runs", str(runs), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "--workers 0: must be an integer >= 1" in err
    assert not runs.exists()  # nothing created


def test_workers_beyond_the_cores_are_capped_with_a_message(tmp_path, write_spec):
    """The sweep given one core (its affinity, as `taskset -c` or a job scheduler sets it) and
    asked for 3 workers runs one, in its own process, and says why."""
    spec = write_spec({"study": "cap", "fixed": FIXED,
                       "grid": {"model": ["fc"], "precision": ["fp32", 1]}})
    runs = tmp_path / "runs"
    core = min(os.sched_getaffinity(0))
    proc = subprocess.run(bitsweep("sweep", str(spec), "--runs", str(runs), "--workers", "3"),
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    assert proc.returncode == 0, proc.stderr
    assert "workers: 3 asked, 1 used: this machine has 1 CPU core (more workers" in proc.stderr
    study = load(runs, "cap")
    assert len(complete_per_slot(study)) == 2
    assert len({t.user_attrs["pid"] for t in study.trials}) == 1  # one worker, not three


def test_workers_beyond_the_memory_are_capped_with_a_message():
    from suite.sweep.workers import WORKER_BYTES, available_memory, usable_workers

    used, why = usable_workers(1000, cores=64, available=3 * 2**30)
    assert used == 3 * 2**30 // WORKER_BYTES == 6
    assert why.startswith("workers: 1000 asked, 6 used: this machine has 3.0 GB of memory "
                          "available")
    assert "CPU core" not in why  # the cores are not why
    assert usable_workers(4, cores=64, available=64 * 2**30) == (4, None)
    assert usable_workers(8, cores=2, available=64 * 2**30)[0] == 2
    assert usable_workers(8, cores=2, available=0)[0] == 1  # never none
    assert 0 < available_memory() < 2**50  # read from this machine
