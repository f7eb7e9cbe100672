"""The sweep's per-epoch reporter survives being pickled into a spawned process (how a
data-parallel run's ranks get their callbacks on CUDA): there it reports into the same trial of
the same storage, and its pruner still prunes, for every storage a sweep uses."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from suite.sweep.driver import open_study
from suite.sweep.reporter import ReportObjective
from suite.sweep.spec import parse_spec

pytestmark = pytest.mark.slow  # a spawned process imports Lightning


def _report_in_child(callbacks: list[ReportObjective], scores: list[float], conn) -> None:
    outcomes = []
    for callback in callbacks:
        try:
            for epoch, score in enumerate(scores):
                callback.report(score, epoch)
            outcomes.append("kept")
        except optuna.TrialPruned:
            outcomes.append(f"pruned at {epoch}")
    conn.send(outcomes)


def _study_with_a_running_trial(url: str) -> tuple[optuna.Study, optuna.Trial]:
    spec = parse_spec({"study": "reporter", "fixed": {"model": "fc", "dataset": "digits"},
                       "grid": {"precision": ["fp32"]}, "tune": {"lr": [1e-3], "trials": 1},
                       "pruner": "median"})
    study = open_study(spec, url)
    for _ in range(2):  # two finished peers of the cell, far better at every epoch
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, values=[0.9], user_attrs={"cell": "c"},
            intermediate_values={0: 0.8, 1: 0.9, 2: 0.9}))
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, "cell", "c")  # noqa: SLF001
    return study, trial


def test_a_pickled_reporter_reports_and_prunes_from_a_spawned_process(tmp_path: Path,
                                                                     postgres_url: str) -> None:
    urls = [str(tmp_path / "study.journal"), f"sqlite:///{tmp_path / 'study.db'}", postgres_url]
    studies, callbacks = [], []
    for url in urls:
        study, trial = _study_with_a_running_trial(url)
        studies.append((study, trial))
        callbacks.append(ReportObjective(trial, "val_acc", prune=True))
    pickle.dumps(callbacks)  # what spawn does with a rank's arguments: must not raise
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_report_in_child, args=(callbacks, [0.1, 0.1, 0.1], send))
    child.start()
    send.close()
    assert receive.poll(120), "the spawned process sent nothing"
    outcomes = receive.recv()
    child.join(30)
    assert child.exitcode == 0
    # MedianPruner(n_warmup_steps=1): epoch 0 is never judged, epoch 1 is below its peers' median
    assert outcomes == ["pruned at 1"] * len(urls)
    for (study, trial), url in zip(studies, urls, strict=True):
        reported = study._storage.get_trial(trial._trial_id).intermediate_values  # noqa: SLF001
        assert reported == {0: 0.1, 1: 0.1}, url


def test_without_a_pruner_it_only_reports(tmp_path: Path) -> None:
    study, trial = _study_with_a_running_trial(str(tmp_path / "study.journal"))
    callback = pickle.loads(pickle.dumps(ReportObjective(trial, "val_acc", prune=False)))
    for epoch in range(3):
        callback.report(0.1, epoch)
    assert study._storage.get_trial(trial._trial_id).intermediate_values == \
        {0: 0.1, 1: 0.1, 2: 0.1}  # noqa: SLF001
