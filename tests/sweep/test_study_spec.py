"""A study keeps the spec it was made with: a second sweep file under the same study name and
storage is refused (exit 2, nothing changed) unless asked to extend the study, whose report then
lists every spec; the same spec resumes, and a study from before specs were kept adopts one."""

from __future__ import annotations

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
