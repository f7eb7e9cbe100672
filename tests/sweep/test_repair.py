"""`bitsweep repair-journal` keeps every surviving result on the trial, and so the cell, it was
trained for, queues again only what was lost, and refuses what it cannot guarantee; a result
changed after it was written fails its checksum and is named by the report.

Optuna gives a trial its id by counting trial creations: a repair that dropped a damaged creation
record moved every later trial's records (results, configs) onto the trial before it.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from suite.cli import main
from suite.run.config import RunConfig
from suite.sweep.checksum import record_checksum, verify
from suite.sweep.queue import claim, queue_lock, sync_queue
from suite.sweep.spec import parse_spec
from suite.sweep.storage import open_storage
from suite.sweep.study import open_study

ROOT = Path(__file__).parents[2]
FIXED = {"dataset": "digits", "epochs": 1, "batch_size": 256, "width": 0.25,
         "wandb_mode": "disabled"}
REAL = {"study": "twelve", "fixed": FIXED,
        "grid": {"model": ["fc"], "precision": ["fp32", 1, "bnn", 2, 3, 4], "seed": [0, 1]}}
CREATE = b'{"op_code":4,'  # a trial's creation record, as Optuna writes it


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _study(journal: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(str(journal), create=False))


def _own(t: optuna.trial.FrozenTrial) -> bool:
    """The trial's stored config is the one its slot (cell) was queued with."""
    fingerprint = RunConfig.from_dict(t.user_attrs["config"]).fingerprint()
    return fingerprint == t.user_attrs["slot"].rpartition("@")[2]


def _done_by_slot(journal: Path, name: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    by_slot = collections.defaultdict(list)
    for t in _study(journal, name).get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            by_slot[t.user_attrs["slot"]].append(t)
    return by_slot


def _damage_creation(journal: Path, which: int, keep: int | None = None) -> tuple[int, bytes]:
    """Cut the ``which``-th trial creation record short, to ``keep`` bytes (default half): a torn
    record later written over; returns its line number and the file's new bytes."""
    lines = _lines(journal.read_bytes())
    number = [i for i, line in enumerate(lines) if line.startswith(CREATE)][which]
    lines[number] = lines[number][:keep or len(lines[number]) // 2] + b"\n"
    journal.write_bytes(b"".join(lines))
    return number + 1, journal.read_bytes()


@pytest.fixture(scope="module")
def twelve(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished 12-cell sweep, trained by a `bitsweep sweep` process."""
    root = tmp_path_factory.mktemp("twelve")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(REAL, sort_keys=False))
    done = subprocess.run([sys.executable, "-m", "suite", "sweep", str(spec), "--runs",
                           str(root / "runs"), "--workers", "1", "--threads", "1"], cwd=ROOT,
                          env={**os.environ, "CI": "true", "WANDB_MODE": "disabled"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return root


def test_a_lost_trial_creation_moves_no_result_and_only_its_cell_runs_again(
        twelve, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CI", "true")
    shutil.copytree(twelve, tmp_path / "s", ignore=shutil.ignore_patterns("trials", "wandb"))
    root = tmp_path / "s"
    journal = root / "runs" / "twelve" / "optuna.journal"
    before = {slot: trials[0] for slot, trials in _done_by_slot(journal, "twelve").items()}
    assert len(before) == 12
    lost_slot = _study(journal, "twelve").trials[4].user_attrs["slot"]
    line, damaged = _damage_creation(journal, 4)  # the 5th trial's: 7 created after it

    assert main(["repair-journal", str(journal)]) == 0
    kept = _done_by_slot(journal, "twelve")
    for slot, trials in kept.items():  # each result on its own trial, as it was stored
        assert [t.number for t in trials] == [before[slot].number] and _own(trials[0])
        assert trials[0].user_attrs["result"] == before[slot].user_attrs["result"]
    assert len(kept) == 11 and lost_slot not in kept
    assert len(_study(journal, "twelve").trials) == 12  # every later trial kept its number
    out = capsys.readouterr().out
    assert f"left out damaged line(s) {line}" in out
    assert "twelve: trial 4 (journal line" in out and "cells run again" in out
    assert list(root.glob("runs/twelve/optuna.journal.bak-*"))[0].read_bytes() == damaged

    assert main(["sweep", str(root / "spec.yaml"), "--runs", str(root / "runs"), "--workers", "1",
                 "--threads", "1"]) == 0
    after = _done_by_slot(journal, "twelve")
    assert sorted(after) == sorted(before) and all(len(t) == 1 for t in after.values())
    for slot, (trial,) in after.items():
        assert _own(trial) and verify(trial.user_attrs)  # the sweep wrote each one's checksum
        if slot != lost_slot:
            assert trial.user_attrs["result"] == before[slot].user_attrs["result"]
    assert after[lost_slot][0].number == 12  # the one cell that ran again, as a new trial


# --- a 40-cell study written through Optuna the way the sweep stores its trials ----------------

FORTY = {"study": "forty", "fixed": FIXED,
         "grid": {"model": ["fc"], "precision": ["fp32", 1, "bnn", 2, 3], "seed": list(range(8))}}


def _store_like_the_sweep(journal: Path, raw: dict, *, done: int | None = None) -> None:
    """Queue every slot and record ``done`` of them (default all) finished, with the attributes
    and checksum suite.sweep.trial writes; each result names the config it was made from."""
    spec = parse_spec(raw)
    url = str(journal)
    study = open_study(spec, url)
    with queue_lock(url):
        sync_queue(study, spec, retry_crashed=True)
    for _ in range(len(spec.cells) if done is None else done):
        trial = claim(study)
        attrs = trial.user_attrs
        config = RunConfig.from_dict(attrs["config"])
        result = {"model": config.model, "precision": config.precision, "seed": config.seed,
                  "fingerprint": config.fingerprint(), "test_acc": 0.5 + config.seed / 100}
        for key, value in (("config", config.to_dict()), ("host", socket.gethostname()),
                           ("pid", os.getpid()), ("result", result),
                           ("checksum", record_checksum(slot=attrs["slot"], cell=attrs["cell"],
                                                        config=config.to_dict(), result=result)),
                           ("curves", []), ("diverged", False)):
            trial.set_user_attr(key, value)
        study.tell(trial, result["test_acc"])


@pytest.mark.parametrize("keep", [None, 18], ids=["study-readable", "only-its-kind-readable"])
def test_forty_cells_a_lost_creation_early_in_the_journal(tmp_path, capsys, keep):
    journal = tmp_path / "forty.journal"
    _store_like_the_sweep(journal, FORTY)
    _damage_creation(journal, 2, keep)  # 37 trials created after it; the study's only one

    assert main(["repair-journal", str(journal)]) == 0
    study = _study(journal, "forty")
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(t.user_attrs["result"]["fingerprint"] == t.user_attrs["slot"].rpartition("@")[2]
               for t in finished)
    assert len(finished) == 39 and all(_own(t) and verify(t.user_attrs) for t in finished)
    assert "forty: trial 2 (journal line" in capsys.readouterr().out
    with queue_lock(str(journal)):  # what a resume queues: the lost cell, nothing else
        state = sync_queue(study, parse_spec(FORTY), retry_crashed=True)
    assert (state.done, state.enqueued) == (39, 1)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len({t.user_attrs["slot"] for t in finished + waiting}) == 40


def test_a_study_an_older_repair_shifted_is_mended(tmp_path, capsys):
    """An older repair dropped a creation line whole: every line is intact, but 37 trials carry
    the records of the trial after them. Their checksums (which cover the slot) say so."""
    journal = tmp_path / "forty.journal"
    _store_like_the_sweep(journal, FORTY)
    lines = _lines(journal.read_bytes())
    del lines[[i for i, line in enumerate(lines) if line.startswith(CREATE)][2]]
    journal.write_bytes(b"".join(lines))

    assert main(["repair-journal", str(journal)]) == 0
    study = _study(journal, "forty")
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(_own(t) and verify(t.user_attrs) for t in finished) and len(finished) == 2
    with queue_lock(str(journal)):
        state = sync_queue(study, parse_spec(FORTY), retry_crashed=True)
    assert (state.done, state.enqueued) == (2, 38)  # the two before the lost line keep theirs
    assert capsys.readouterr().out.count("do not match their checksum") == 37


def test_a_lost_result_fails_its_trial_alone_and_a_waiting_trial_keeps_its_place(
        tmp_path, capsys):
    journal = tmp_path / "forty.journal"
    _store_like_the_sweep(journal, FORTY, done=20)  # 20 finished, 20 still waiting
    lines = _lines(journal.read_bytes())
    result = next(i for i, line in enumerate(lines) if b'"user_attr":{"result"' in line)
    cut = lines[result].index(b'"user_attr"')
    lines[result] = lines[result][:cut] + b"\n"  # which trial it was is still readable
    journal.write_bytes(b"".join(lines))

    assert main(["repair-journal", str(journal)]) == 0
    study = _study(journal, "forty")
    states = collections.Counter(t.state for t in study.trials)
    assert states == {TrialState.COMPLETE: 19, TrialState.FAIL: 1, TrialState.WAITING: 20}
    assert "forty: trial 0 (journal line" in capsys.readouterr().out
    failed = study.trials[0]
    assert failed.state == TrialState.FAIL and failed.user_attrs["failure"] == "damaged"
    assert f"journal line {result + 1}" in failed.user_attrs["error"]
    assert all(_own(t) for t in study.trials if t.state == TrialState.COMPLETE)


@pytest.mark.parametrize("what", ["kind", "study"])
def test_a_damage_it_cannot_attribute_is_refused_and_nothing_changes(tmp_path, capsys, what):
    """A creation whose op code is unreadable, or whose study is when two studies exist."""
    journal = tmp_path / "forty.journal"
    _store_like_the_sweep(journal, FORTY, done=3)
    if what == "study":
        _store_like_the_sweep(journal, {**FORTY, "study": "other"}, done=1)
    lines = _lines(journal.read_bytes())
    number = [i for i, line in enumerate(lines) if line.startswith(CREATE)][-1]
    cut = 4 if what == "kind" else lines[number].index(b'"study_id":') + len(b'"study_id":')
    lines[number] = lines[number][:cut] + b"\xff" + lines[number][cut + 1:]
    journal.write_bytes(b"".join(lines))
    damaged = journal.read_bytes()

    assert main(["repair-journal", str(journal)]) == 2
    err = capsys.readouterr().err
    assert f"line {number + 1} is damaged" in err and "nothing was changed" in err
    assert "Traceback" not in err
    assert journal.read_bytes() == damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forty.journal",
                                                          "forty.journal.queue-lock"]


# --- a result changed after it was written -------------------------------------------------


def _change_a_digit(journal: Path, trial_number: int) -> None:
    """One digit of a stored test_acc changed, the line still valid JSON (no repair sees it)."""
    lines = _lines(journal.read_bytes())
    results = [i for i, line in enumerate(lines) if b'"user_attr":{"result"' in line]
    i = results[trial_number]
    record = json.loads(lines[i])
    acc = record["user_attr"]["result"]["test_acc"]
    changed = re.sub(rb'("test_acc":0\.)(\d)', lambda m: m[1] + str((int(m[2]) + 1) % 10).encode(),
                     lines[i], count=1)
    assert changed != lines[i] and json.loads(changed)["user_attr"]["result"]["test_acc"] != acc
    lines[i] = changed
    journal.write_bytes(b"".join(lines))


def test_a_changed_digit_is_named_by_the_report_and_its_cell_runs_again(twelve, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv("CI", "true")
    shutil.copytree(twelve, tmp_path / "s", ignore=shutil.ignore_patterns("trials", "wandb"))
    root = tmp_path / "s"
    journal = root / "runs" / "twelve" / "optuna.journal"
    _change_a_digit(journal, 7)
    report = ["report", str(root / "spec.yaml"), "--runs", str(root / "runs"), "--out",
              str(root / "reports"), "--formats", "png"]

    assert main(report) == 0
    err = capsys.readouterr().err
    assert "damaged record: trial 7 (cell" in err and "do not match the checksum" in err
    assert f"bitsweep repair-journal {journal}" in err
    md = (root / "reports" / "twelve" / "report.md").read_text()
    assert "## Damaged records" in md and "- trial 7 (cell" in md
    with (root / "reports" / "twelve" / "results.csv").open() as fh:
        import csv

        rows = {r["trial"]: r for r in csv.DictReader(fh)}
    assert rows["7"]["status"] == "failed" and rows["7"]["test_acc"] == ""
    assert rows["6"]["status"] == "ok" and rows["6"]["test_acc"] != ""

    sweep = ["sweep", str(root / "spec.yaml"), "--runs", str(root / "runs"), "--workers", "1",
             "--threads", "1"]
    main(sweep)  # the sweep names it too, and the fix
    err = capsys.readouterr().err
    assert "trial 7 (cell" in err and "do not match their checksum" in err
    assert f"bitsweep repair-journal {journal}` fails it" in err

    assert main(["repair-journal", str(journal)]) == 0
    assert "twelve: trial 7 (its stored config and result do not match their checksum)" in (
        capsys.readouterr().out)
    assert main(sweep) == 0
    after = _done_by_slot(journal, "twelve")
    assert len(after) == 12 and all(len(t) == 1 and verify(t[0].user_attrs)
                                    for t in after.values())
    assert main(report) == 0
    assert "damaged" not in capsys.readouterr().err


def test_a_changed_result_in_a_database_runs_its_cell_again(tmp_path, capsys, monkeypatch):
    """A database has no repair-journal: the sweep itself does not count a result that fails its
    checksum as done, so its cell runs again, and the report uses the new run only."""
    import sqlite3

    monkeypatch.setenv("CI", "true")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**REAL, "study": "db", "grid": {"model": ["fc"],
                                                                    "precision": ["fp32", 1]}}))
    db = tmp_path / "study.db"
    sweep = ["sweep", str(spec), "--storage", f"sqlite:///{db}", "--runs", str(tmp_path / "runs"),
             "--workers", "1", "--threads", "1"]
    assert main(sweep) == 0
    with sqlite3.connect(db) as con:
        trial_id, value = con.execute("SELECT trial_id, value_json FROM trial_user_attributes "
                                      "WHERE key = 'result' ORDER BY trial_id LIMIT 1").fetchone()
        changed = re.sub(r'("test_acc": 0\.)(\d)',
                         lambda m: m[1] + str((int(m[2]) + 1) % 10), value, count=1)
        assert changed != value
        con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND "
                    "key = 'result'", (changed, trial_id))
    capsys.readouterr()

    assert main(sweep) == 0
    assert "its cell runs again at the next `bitsweep sweep`" in capsys.readouterr().err
    trials = optuna.load_study(study_name="db", storage=f"sqlite:///{db}").get_trials()
    done = collections.defaultdict(list)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            done[t.user_attrs["slot"]].append(verify(t.user_attrs))
    assert sorted(done.values()) == [[False, True], [True]]  # the damaged cell ran once more
    assert main(["report", str(spec), "--storage", f"sqlite:///{db}", "--out",
                 str(tmp_path / "reports"), "--formats", "png"]) == 0
    with (tmp_path / "reports" / "db" / "results.csv").open() as fh:
        import csv

        rows = list(csv.DictReader(fh))
    assert sorted(r["status"] for r in rows) == ["ok", "ok", "retried"]  # damaged, run again
    assert sorted(r["precision"] for r in rows if r["status"] == "ok") == ["1", "fp32"]
