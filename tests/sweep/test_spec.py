"""Sweep files are validated whole before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.cli import main
from suite.sweep.spec import SpecError, load_spec, parse_spec

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
