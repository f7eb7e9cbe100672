"""`bitsweep report --wandb`: the tables and figures as one offline W&B run of job type report,
beside the study's runs, read back from its .wandb file and its media files; and the report's own
files are the same bytes as without the flag."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from suite.cli import main
from suite.report import load_study
from suite.report.synthetic import add_to_study, synthetic_records
from suite.report.wandb import WandbPlace, log_report, wandb_place
from suite.run.tracking import _records, read_offline_run
from suite.sweep.spec import load_spec

STUDY = "wbdemo"
SPEC_YAML = f"""\
study: {STUDY}
wandb: {{mode: offline, project: bitsweep-test}}
fixed: {{dataset: digits, epochs: 4}}
grid:
  model: [fc]
  precision: [fp32, 1, 2.32, bnn]
  seed: [0, 1]
"""


@pytest.fixture(autouse=True, scope="module")
def _offline_wandb():
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.delenv("WANDB_API_KEY", raising=False)
    yield
    mp.undo()


def _records_of(**config: Any) -> list[dict[str, Any]]:
    records = synthetic_records(models=("fc",), precisions=("fp32", "1", "2.32", "bnn"),
                                seeds=(0, 1), augments=("none",), epochs=(4,), failed=1)
    for rec in records:
        rec["config"].update(config)
    return records


def _storage(root: Path, study: str, records: list[dict[str, Any]]) -> str:
    url = f"sqlite:///{root / f'{study}.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    add_to_study(optuna.create_study(study_name=study, storage=url, direction="maximize"), records)
    return url


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """The same study reported twice into the same --out: without --wandb, then with it."""
    root = tmp_path_factory.mktemp("wandb-report")
    spec = root / f"{STUDY}.yaml"
    spec.write_text(SPEC_YAML)
    url = _storage(root, STUDY, _records_of())
    args = ["report", str(spec), "--storage", url, "--out", str(root / "reports"),
            "--runs", str(root / "runs"), "--formats", "png"]
    assert main(args) == 0
    assert not (root / "runs").exists()  # no W&B without the flag
    shutil.copytree(root / "reports" / STUDY, root / "without")
    assert main([*args, "--wandb"]) == 0
    return {"root": root, "out": root / "reports" / STUDY, "without": root / "without",
            "wandb": root / "runs" / STUDY / "wandb", "url": url}


def read_run(run_dir: Path) -> dict[str, Any]:
    """An offline run's run record (job type, project, group, name), exit code, and what it
    logged: {key: {field: value}} from its history records (a logged table or image is a dict of
    fields such as _type, path, nrows, sha256)."""
    run = read_offline_run(run_dir, wait=10)  # also waits for the exit record
    from wandb.proto import wandb_internal_pb2 as pb

    logged: dict[str, Any] = {}
    for raw in _records(next(run_dir.glob("run-*.wandb"))):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run.update(job_type=rec.run.job_type, project=rec.run.project)
        elif kind == "history":
            for item in rec.history.item:
                key, *field = list(item.nested_key) or [item.key]
                value = json.loads(item.value_json)
                if field:
                    logged.setdefault(key, {})["/".join(field)] = value
                else:
                    logged[key] = value
    return {**run, "logged": logged, "files": run_dir / "files"}


def only_run(wandb_dir: Path) -> dict[str, Any]:
    runs = sorted(wandb_dir.glob("offline-run-*"))
    assert len(runs) == 1, runs
    return read_run(runs[0])


def test_one_offline_run_of_job_type_report_in_the_study_project(study):
    run = only_run(study["wandb"])  # runs/<study>/wandb/, where the trials' offline runs go
    assert run["job_type"] == "report" and run["exit_code"] == 0
    assert run["project"] == "bitsweep-test"  # the spec's wandb project
    assert run["group"] == STUDY  # the runs have one group per configuration, none shared
    assert run["name"] == f"{STUDY}/report" and run["tags"] == ["report"]
    assert run["config"]["study"] == STUDY
    assert run["config"]["runs"] == len(pd.read_csv(study["out"] / "results.csv"))
    assert "--wandb" not in run["config"]["command"]


@pytest.mark.parametrize(("key", "csv"), [("results", "results.csv"),
                                          ("claims", "tables/claims.csv")])
def test_tables_hold_the_csvs(study, key, csv):
    run = only_run(study["wandb"])
    table = run["logged"][key]
    written = pd.read_csv(study["out"] / csv)
    assert table["_type"] == "table-file"
    assert (table["nrows"], table["ncols"]) == written.shape
    stored = json.loads((run["files"] / table["path"]).read_text())
    assert stored["columns"] == list(written.columns)
    assert len(stored["data"]) == len(written)
    if key == "claims":
        verdicts = [row[stored["columns"].index("verdict")] for row in stored["data"]]
        assert verdicts == list(written["verdict"])


def test_every_written_figure_is_logged_with_its_bytes(study):
    run = only_run(study["wandb"])
    pngs = sorted((study["out"] / "figures").glob("*.png"))
    assert len(pngs) >= 5
    figures = {k: v for k, v in run["logged"].items() if k.startswith("figures/")}
    assert sorted(figures) == sorted(f"figures/{p.stem}" for p in pngs)
    for png in pngs:
        image = figures[f"figures/{png.stem}"]
        digest = hashlib.sha256(png.read_bytes()).hexdigest()
        assert image["_type"] == "image-file" and image["sha256"] == digest
        assert (run["files"] / image["path"]).read_bytes() == png.read_bytes()


def _built_line_free(text: str) -> str:
    return re.sub(r"Built \d{4}-\d\d-\d\d \d\d:\d\d UTC", "Built <time>", text)


def test_report_files_are_the_same_bytes_with_wandb(study):
    with_flag = {p.relative_to(study["out"]) for p in study["out"].rglob("*") if p.is_file()}
    without = {p.relative_to(study["without"]) for p in study["without"].rglob("*") if p.is_file()}
    assert with_flag == without
    for rel in sorted(without):
        before, after = (study["without"] / rel).read_bytes(), (study["out"] / rel).read_bytes()
        if rel.name == "report.md":  # the build time is the one line that may differ
            before, after = _built_line_free(before.decode()), _built_line_free(after.decode())
        assert before == after, rel


def test_a_study_name_without_png_logs_redrawn_figures_to_the_runs_group(tmp_path):
    """No spec file and no stored spec: the project and group the runs recorded; figures written
    only as SVG are drawn again as PNG for W&B."""
    records = _records_of(wandb_group="shared-group", wandb_project="proj-x")
    url = _storage(tmp_path, "named", records)
    assert main(["report", "named", "--storage", url, "--out", str(tmp_path / "reports"),
                 "--runs", str(tmp_path / "runs"), "--formats", "svg",
                 "--wandb-mode", "offline"]) == 0  # a mode implies --wandb
    fig_dir = tmp_path / "reports" / "named" / "figures"
    assert not list(fig_dir.glob("*.png"))  # the report is as --formats asked
    run = only_run(tmp_path / "runs" / "named" / "wandb")
    assert (run["job_type"], run["project"], run["group"]) == ("report", "proj-x", "shared-group")
    figures = {k: v for k, v in run["logged"].items() if k.startswith("figures/")}
    assert sorted(figures) == sorted(f"figures/{p.stem}" for p in fig_dir.glob("*.svg"))
    for image in figures.values():
        assert image["format"] == "png" and image["width"] > 500
        assert (run["files"] / image["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_place_follows_the_spec_and_the_mode_override(tmp_path, study):
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(SPEC_YAML.replace("mode: offline", "mode: disabled"))
    spec = load_spec(spec_path)
    frames = load_study(STUDY, study["url"])
    assert wandb_place(STUDY, frames, spec=spec) == WandbPlace("disabled", "bitsweep-test", STUDY)
    assert wandb_place(STUDY, frames, spec=spec, mode="offline").mode == "offline"
    assert wandb_place(STUDY, frames) == WandbPlace("offline", "bitsweep", STUDY)
    frames.spec = spec.raw  # a study name given, and the spec stored with the study
    assert wandb_place(STUDY, frames) == WandbPlace("disabled", "bitsweep-test", STUDY)


def test_disabled_mode_logs_nothing(tmp_path, study, capsys):
    frames = load_study(STUDY, study["url"])
    place = WandbPlace("disabled", "bitsweep-test", STUDY)
    assert log_report(study["out"], frames, study=STUDY, place=place, save_dir=tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    assert "not logged" in capsys.readouterr().err


def test_bad_wandb_mode_is_refused_before_anything_is_written(tmp_path, study, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", STUDY, "--storage", study["url"], "--out", str(tmp_path / "r"),
              "--wandb-mode", "sometimes"])
    assert exit_.value.code == 2 and not (tmp_path / "r").exists()
    assert "--wandb-mode" in capsys.readouterr().err
