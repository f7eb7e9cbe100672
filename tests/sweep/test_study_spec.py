"""A study keeps the spec it was made with: a second sweep file under the same study name and
storage is refused (exit 2, nothing changed) unless asked to extend the study, whose report then
lists every spec; the same spec resumes, and a study from before specs were kept adopts one."""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
from pathlib import Path

import optuna
import pytest
import yaml

from suite.cli import main
from suite.sweep.queue import queue_lock, sync_queue
from suite.sweep.spec import parse_spec
from suite.sweep.storage import open_storage
from suite.sweep.study import open_study
from suite.sweep.studyspec import SPEC_HASHES_ATTR, SPECS_ATTR

FIXED = {"dataset": "digits", "epochs": 1, "batch_size": 256, "width": 0.25,
         "wandb_mode": "disabled"}
FIRST = {"study": "same", "fixed": FIXED, "grid": {"model": ["fc"], "precision": ["fp32", 1]}}
OTHER = {**FIRST, "grid": {"model": ["fc"], "precision": [2, 3, 4]}}


@pytest.fixture(params=["journal", "sqlite"])
def storage(request, tmp_path) -> str:
    if request.param == "journal":
        return str(tmp_path / "runs" / "same" / "optuna.journal")
    return f"sqlite:///{tmp_path / 'same.db'}"


def _sweep(tmp_path, raw: dict, storage: str, *flags: str, name: str = "spec.yaml") -> int:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return main(["sweep", str(path), "--storage", storage, "--runs", str(tmp_path / "runs"),
                 "--workers", "1", "--n-trials", "0", *flags])  # queue only: no training


def _study(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="same", storage=open_storage(storage, create=False))


def _snapshot(storage: str) -> tuple:
    study = _study(storage)
    return (study.user_attrs, [(t.number, t.state, t.user_attrs) for t in study.trials])


def test_another_grid_under_the_same_name_is_refused_and_nothing_changes(tmp_path, storage,
                                                                         capsys):
    assert _sweep(tmp_path, FIRST, storage) == 0
    before = _snapshot(storage)
    capsys.readouterr()

    assert _sweep(tmp_path, OTHER, storage, name="other.yaml") == 2
    err = capsys.readouterr().err
    assert "study 'same'" in err and "was made with another spec" in err
    assert "3 run(s) of" in err and "2 of its run(s) are not in" in err
    assert "a new `study:` name" in err and "--extend" in err and "Traceback" not in err
    assert _snapshot(storage) == before  # not one trial queued, not one attribute changed


def test_the_same_spec_resumes_whatever_else_changed(tmp_path, storage, capsys):
    assert _sweep(tmp_path, FIRST, storage) == 0
    before = _snapshot(storage)
    # how it runs is not what it runs: workers, description and W&B project keep the study's spec
    again = {**FIRST, "description": "the same runs", "workers": 2,
             "wandb": {"project": "elsewhere"}}
    assert _sweep(tmp_path, again, storage) == 0
    study = _study(storage)
    assert len(study.trials) == 2 and study.user_attrs[SPEC_HASHES_ATTR] == before[0][SPEC_HASHES_ATTR]


def test_extend_adds_the_runs_and_the_report_lists_every_spec(tmp_path, storage, capsys):
    assert _sweep(tmp_path, FIRST, storage) == 0
    assert _sweep(tmp_path, OTHER, storage, "--extend", name="other.yaml") == 0
    study = _study(storage)
    assert len(study.trials) == 5 and len(study.user_attrs[SPEC_HASHES_ATTR]) == 2
    assert [yaml.safe_load(s)["grid"] for s in study.user_attrs[SPECS_ATTR]] == [
        FIRST["grid"], OTHER["grid"]]
    assert _sweep(tmp_path, FIRST, storage) == 0  # either spec now resumes without the flag
    assert _sweep(tmp_path, OTHER, storage, name="other.yaml") == 0
    assert len(_study(storage).trials) == 5

    capsys.readouterr()
    assert main(["report", "same", "--storage", storage, "--out", str(tmp_path / "reports"),
                 "--formats", "png"]) == 0
    md = (tmp_path / "reports" / "same" / "report.md").read_text()
    spec_part = md.split("## Study spec", 1)[1]
    assert "holds the runs of 2 specs" in spec_part
    assert spec_part.index("### Spec 1") < spec_part.index("- fp32") < spec_part.index(
        "### Spec 2") < spec_part.index("- 4")


def test_a_study_from_before_specs_were_kept_adopts_the_spec(tmp_path, storage):
    """Made as a sweep did before studies kept their spec: no spec hash; then another grid."""
    spec = parse_spec(FIRST)
    study = open_study(spec, storage)
    study.set_user_attr("spec", FIRST)
    with queue_lock(storage):
        sync_queue(study, spec, retry_crashed=True)
    assert SPEC_HASHES_ATTR not in _study(storage).user_attrs

    assert _sweep(tmp_path, OTHER, storage) == 0  # adopted, not refused
    study = _study(storage)
    assert len(study.trials) == 5 and len(study.user_attrs[SPEC_HASHES_ATTR]) == 1
    assert _sweep(tmp_path, FIRST, storage, name="first.yaml") == 2  # from now on it is kept


# --- sweeps of two specs started together ----------------------------------------------------

PROCESSES = 4  # two per spec
ROUNDS = ("journal", "sqlite", "journal")


def _racer(inbox, barrier, results, log: str) -> None:
    """One machine: for each argv it is sent, wait at the barrier with the others, then run
    `bitsweep ARGV` in-process and report its exit status; None ends it."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update({"CI": "true", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"})
    while (argv := inbox.get()) is not None:
        barrier.wait(timeout=300)
        results.put((argv[1], main(argv)))


def test_two_specs_started_together_one_is_refused_and_the_study_holds_one(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    inboxes = [ctx.Queue() for _ in range(PROCESSES)]
    procs = [ctx.Process(target=_racer, args=(inboxes[i], barrier, results,
                                              str(tmp_path / f"p{i}.log")))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    specs = []
    for name, raw in (("first.yaml", FIRST), ("other.yaml", OTHER)):
        specs.append(tmp_path / name)
        specs[-1].write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        for number, kind in enumerate(ROUNDS):
            url = (str(tmp_path / f"r{number}" / "optuna.journal") if kind == "journal"
                   else f"sqlite:///{tmp_path / f'r{number}.db'}")
            for i, inbox in enumerate(inboxes):
                inbox.put(["sweep", str(specs[i % 2]), "--storage", url, "--runs",
                           str(tmp_path / "runs"), "--workers", "1", "--n-trials", "0"])
            got = collections.defaultdict(list)
            for _ in range(PROCESSES):
                spec, status = results.get(timeout=300)
                got[spec].append(status)
            logs = "".join(p.read_text() for p in tmp_path.glob("p*.log"))
            # all of one spec joined the study, all of the other were refused
            assert sorted(sorted(s) for s in got.values()) == [[0, 0], [2, 2]], (got, logs)
            won = next(spec for spec, statuses in got.items() if statuses == [0, 0])
            study = _study(url)
            cells = len(yaml.safe_load(Path(won).read_text())["grid"]["precision"])
            assert len(study.user_attrs[SPEC_HASHES_ATTR]) == 1 and len(study.trials) == cells
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
