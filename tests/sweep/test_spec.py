"""Sweep files are validated whole before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from suite.cli import main
from suite.sweep.spec import MAX_CELLS, SpecError, check_study_paths, load_spec, parse_spec

GOOD = {
    "study": "tiny",
    "fixed": {"dataset": "digits", "epochs": 1},
    "grid": {"model": ["fc", "cnn"], "precision": ["fp32", 1, 2.32, "bnn"], "seed": [0, 1]},
}


def test_grid_is_a_full_factorial_with_labels_normalised():
    spec = parse_spec(GOOD)
    assert len(spec.cells) == 16
    assert {c.precision for c in spec.cells} == {"fp32", "1", "2.32", "bnn"}
    assert spec.axes == ("model", "precision", "seed")
    assert len({spec.key(c) for c in spec.cells}) == 16


def test_bits_and_zero_axes_expand_to_level_counts():
    raw = {**GOOD, "grid": {"model": ["fc"], "bits": [1, 2, 3, 4], "zero": [False, True]}}
    spec = parse_spec(raw)
    levels = sorted(c.resolution.levels for c in spec.cells)
    assert levels == [2, 3, 4, 5, 8, 9, 16, 17]


def test_union_of_grids_shares_overlapping_cells():
    raw = {**GOOD, "grid": [
        {"model": ["fc"], "precision": ["fp32", 1]},
        {"model": ["fc", "cnn"], "precision": [1]},
        {"model": ["lm"], "dataset": ["stdlib-text"], "precision": ["bnn"]},
    ]}
    spec = parse_spec(raw)
    assert len(spec.cells) == 4  # fc/1 appears in two grids but runs once


@pytest.mark.parametrize("raw, needle", [
    ({**GOOD, "grdi": {}}, "unknown key 'grdi'"),
    ({**GOOD, "grid": {"model": ["fc"], "precision": [0]}}, "precision"),
    ({**GOOD, "grid": {}}, "grid is empty"),
    ({**GOOD, "grid": {"model": []}}, "non-empty list"),
    ({**GOOD, "grid": {"model": ["resnet"]}}, "unknown model"),
    ({**GOOD, "grid": {"model": ["lm"]}}, "needs a text corpus"),
    ({**GOOD, "pruner": "median"}, "needs a tune section"),
    ({**GOOD, "tune": {"lr": {"low": 1.0, "high": 0.1}}}, "low < high"),
    ({**GOOD, "objective": {"metric": "accuracy"}}, "objective.metric"),
    ({**GOOD, "study": "bad name!"}, "study"),
])
def test_bad_specs_name_the_key(raw, needle):
    with pytest.raises(SpecError, match=needle):
        parse_spec(raw)


@pytest.mark.parametrize("text, needle", [
    ("study: tiny\ngrid: {model: [fc]\n", "not valid YAML"),
    ("study: tiny\nfixed: {dataset: digits}\ngrid:\n  model: [fc]\n  precision: [0]\n", "precision"),
    ("study: tiny\ngrid: {}\n", "grid is empty"),
    ("study: tiny\nfixed: {dataset: digits}\ngrid: {model: [fc]}\nwokers: 2\n", "line 4"),
])
def test_malformed_sweep_file_exits_2_and_creates_nothing(tmp_path: Path, capsys, text, needle):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    runs = tmp_path / "runs"
    assert main(["sweep", str(spec), "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "bad.yaml" in err
    assert not runs.exists()


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SpecError, match="no such sweep file"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].glob("sweeps/*.yaml")))
def test_shipped_sweep_files_are_valid(path: Path):
    spec = load_spec(path)
    assert spec.cells and spec.study == path.stem


def test_progress_names_a_trial_by_what_tells_it_apart(capsys):
    """A trial of the image grid is not labelled with the LM grid's block_size or an unset subset."""
    import optuna

    from suite.run.config import RunConfig
    from suite.sweep import Progress

    spec = load_spec("sweeps/default.yaml")
    study = optuna.create_study(direction="maximize")
    progress = Progress(study, total=2, already=0, axes=spec.axes)
    image = RunConfig.from_dict({"model": "cnn", "precision": "2.32", "epochs": 24, "seed": 1})
    lm = RunConfig.from_dict({"model": "lm", "dataset": "stdlib-text", "subset": 1024,
                              "block_size": 32, "precision": "fp32", "seed": 0})
    for config, acc in ((image, 0.9), (lm, 0.3)):
        study.add_trial(optuna.trial.create_trial(
            value=acc, user_attrs={"config": config.to_dict(),
                                   "result": {"val_acc": acc, "fit_seconds": 1.0}}))
    progress.close()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[") and
             "trial" in ln and not ln.startswith("[I ")]
    assert lines[0].startswith("[1/2 ") and \
        lines[0].endswith("] trial 0 cnn 2.32 epochs=24 seed=1: val_acc=0.900 (1.0 s)")
    assert "block_size=32" in lines[1] and "subset=1024" in lines[1] and "lm fp32" in lines[1]
    assert "subset" not in lines[0] and "block_size" not in lines[0] and "width" not in lines[0]


# --- limits and bad input (issue 22) -------------------------------------------------------------

@pytest.mark.parametrize("raw, where", [
    ({**GOOD, "grid": {**GOOD["grid"], "lr": [0.01, 0.001]},
      "tune": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}}, "grid axis"),
    ({**GOOD, "fixed": {**GOOD["fixed"], "lr": 0.01},
      "tune": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}}, "fixed field"),
    ({**GOOD, "grid": {"model": ["fc"], "bits": [1, 2]}, "tune": {"precision": ["1", "2"]}},
     "grid axis"),
])
def test_a_tuned_field_that_the_grid_or_fixed_sets_is_refused(tmp_path: Path, capsys, raw, where):
    """The tuned value would replace the cell's own: a cell labelled lr=0.01 trained at TPE's
    draw. Refused at validation, the field named, nothing created."""
    name = next(iter(set(raw["tune"])))
    with pytest.raises(SpecError, match=rf"^tune\.{name}: {name} is also a {where}"):
        parse_spec(raw)
    spec = tmp_path / "both.yaml"
    spec.write_text(yaml.safe_dump(raw))
    runs = tmp_path / "runs"
    assert main(["sweep", str(spec), "--runs", str(runs)]) == 2
    assert f"tune.{name}" in capsys.readouterr().err
    assert not runs.exists()


def test_a_grid_is_counted_before_any_cell_is_built(capsys):
    """10^9 cells are refused by their count: every cell here is invalid (epochs: 0), so building
    even the first one would end in that cell's error instead."""
    raw = {"study": "huge", "fixed": {"dataset": "digits", "epochs": 0},
           "grid": {"seed": list(range(1000)), "lr": [i / 1e4 + 1e-4 for i in range(1000)],
                    "width": [1.0 + i for i in range(1000)]}}
    with pytest.raises(SpecError) as refused:
        parse_spec(raw)
    assert str(refused.value).startswith("grid: 1,000,000,000 cells, more than the limit of 100,000")
    assert "--max-cells 1000000000" in str(refused.value)
    # a list of grids counts each (before shared cells are merged)
    raw["grid"] = [{"seed": list(range(400))}, {"seed": list(range(400)), "width": [1.0] * 250}]
    with pytest.raises(SpecError, match="100,400 cells"):
        parse_spec(raw)


def test_max_cells_lifts_the_limit_from_the_file_or_the_command(tmp_path: Path):
    raw = {"study": "twelve", "fixed": {"dataset": "digits"}, "grid": {"seed": list(range(12))}}
    with pytest.raises(SpecError, match="12 cells, more than the limit of 10"):
        parse_spec({**raw, "max_cells": 10})
    assert len(parse_spec({**raw, "max_cells": 12}).cells) == 12
    path = tmp_path / "twelve.yaml"
    path.write_text(yaml.safe_dump({**raw, "max_cells": 10}))
    assert len(load_spec(path, max_cells=12).cells) == 12
    with pytest.raises(SpecError, match="max_cells"):
        parse_spec({**raw, "max_cells": 0})


def test_the_shipped_studies_are_far_below_the_cell_limit():
    for path in sorted(Path("sweeps").glob("*.yaml")):
        spec = load_spec(path)
        assert len(spec.cells) * 50 < spec.max_cells == MAX_CELLS, path


@pytest.mark.parametrize("storage", [None, "sqlite"])
def test_a_study_name_too_long_for_a_folder_exits_2_and_creates_nothing(tmp_path: Path, capsys,
                                                                         storage):
    raw = {**GOOD, "study": "s" * 300, "grid": {"model": ["fc"]}}
    spec = tmp_path / "long.yaml"
    spec.write_text(yaml.safe_dump(raw))
    runs = tmp_path / "runs"
    db = tmp_path / "study.db"
    flags = ["--storage", f"sqlite:///{db}"] if storage else []
    assert main(["sweep", str(spec), "--runs", str(runs), *flags]) == 2
    err = capsys.readouterr().err
    assert "study" in err and "300 characters, more than 100" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.yaml"]


def test_a_runs_folder_too_deep_for_the_study_is_refused_before_it_is_made(tmp_path: Path):
    spec = parse_spec(GOOD)
    deep = tmp_path.joinpath(*["d" * 200] * 25)  # 5,000 bytes: beyond PATH_MAX (4,096)
    with pytest.raises(SpecError, match="too deep"):
        check_study_paths(spec, deep)
    check_study_paths(spec, tmp_path / "runs")  # an ordinary one passes
    assert list(tmp_path.iterdir()) == []


def test_a_key_given_twice_in_a_sweep_file_is_refused(tmp_path: Path, capsys):
    spec = tmp_path / "twice.yaml"
    spec.write_text("study: twice\nfixed:\n  dataset: digits\n  epochs: 1\n  epochs: 3\n"
                    "grid: {model: [fc]}\n")
    with pytest.raises(SpecError, match=r"line 5\): not valid YAML: key 'epochs' is given twice "
                                        r"\(lines 4 and 5\)"):
        load_spec(spec)
    runs = tmp_path / "runs"
    assert main(["sweep", str(spec), "--runs", str(runs)]) == 2
    assert "'epochs' is given twice" in capsys.readouterr().err
    assert not runs.exists()
    # a YAML merge key may bring in a key that the mapping sets again: not a duplicate
    merged = tmp_path / "merged.yaml"
    merged.write_text("study: merged\nfixed:\n  <<: {dataset: digits, epochs: 1}\n  epochs: 2\n"
                      "grid: {model: [fc]}\n")
    assert load_spec(merged).cells[0].epochs == 2


def test_a_binary_sweep_file_is_a_clear_error(tmp_path: Path, capsys):
    spec = tmp_path / "model.bin"
    spec.write_bytes(bytes(range(256)) * 4)
    runs = tmp_path / "runs"
    assert main(["sweep", str(spec), "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "model.bin: not a YAML text file" in err and "Traceback" not in err
    assert not runs.exists()
