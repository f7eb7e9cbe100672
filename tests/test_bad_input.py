"""Bad input that used to crash deep inside torch or fail every trial of a sweep: now exit 2, the
field named, nothing created."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from suite.cli import main
from suite.models.registry import TRAIN_BYTES_PER_PARAM, available_memory, model_size

TINY = ["--dataset", "digits", "--subset", "20", "--epochs", "1", "--wandb-mode", "disabled"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("CI", "true")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_a_model_too_large_for_memory_exits_2_with_its_size(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "fc", *TINY, "--width", "1e6", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bitsweep train: error: width=1000000.0: ")
    assert "Traceback" not in err and "DefaultCPUAllocator" not in err
    params = _number(re.search(r"would have ([\d,]+) parameters", err).group(1))
    need = _number(re.search(r"needs at least ([\d,]+) bytes", err).group(1))
    have = _number(re.search(r"but ([\d,]+) bytes .* available", err).group(1))
    assert params > 10**16 and need >= params * TRAIN_BYTES_PER_PARAM > have
    assert not out.exists()  # no run directory, no W&B run


def test_deep_models_are_refused_before_they_are_built(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    # a million fc layers: counted from three of them, not built
    assert main(["train", "--model", "fc", *TINY, "--depth", "1000000", "--out", str(out)]) == 2
    assert "error: depth=1000000: model 'fc' would have" in capsys.readouterr().err
    # a cnn doubles its channels every block: 2000 of them overflow a float while being described
    assert main(["train", "--model", "cnn", *TINY, "--depth", "2000", "--out", str(out)]) == 2
    assert "error: depth=2000: model 'cnn' is too large" in capsys.readouterr().err
    assert not out.exists()


def test_a_model_that_fits_still_trains_and_the_estimate_is_its_size(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "cnn", *TINY, "--width", "0.5", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    params, _ = model_size(json.loads((out / "model.json").read_text()))
    assert params == result["params"]  # counted on the meta device: exact
    assert params * TRAIN_BYTES_PER_PARAM < available_memory()


def test_a_sweep_over_an_unavailable_dataset_creates_nothing(tmp_path, monkeypatch, capsys) -> None:
    # Not on this machine (an empty data dir) and its download "server" refuses connections.
    data = tmp_path / "data"
    monkeypatch.setenv("BITSWEEP_DATA_DIR", str(data))
    monkeypatch.setenv("BITSWEEP_DATA_MIRROR", "http://127.0.0.1:9")
    spec = tmp_path / "offline.yaml"
    spec.write_text(yaml.safe_dump({
        "study": "offline", "fixed": {"epochs": 1, "wandb_mode": "disabled"},
        "grid": [{"model": ["fc"], "dataset": ["digits"]},
                 {"model": ["fc"], "dataset": ["cifar10"], "precision": ["fp32", 1]}],
    }))
    runs = tmp_path / "runs"
    assert main(["sweep", str(spec), "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "bitsweep sweep: error: dataset='cifar10': " in err
    assert "127.0.0.1:9" in err and "cifar-10-python.tar.gz" in err  # the data layer's own words
    assert not runs.exists()  # no runs/<study>/, no journal
    assert [p for p in data.rglob("*") if p.is_file()] == []  # no half-downloaded file either


def test_a_sweep_whose_datasets_are_there_runs(tmp_path, capsys) -> None:
    spec = tmp_path / "here.yaml"
    spec.write_text(yaml.safe_dump({
        "study": "here", "fixed": {"epochs": 1, "width": 0.5, "wandb_mode": "disabled"},
        "grid": {"model": ["fc"], "dataset": ["digits"], "seed": [0, 1]},
    }))
    runs = tmp_path / "runs"
    assert main(["sweep", str(spec), "--runs", str(runs)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["complete"] == 2
    assert (runs / "here" / "optuna.journal").is_file()


# --- issue 22: limits instead of exhaustion, bad input that gave a traceback ---------------------

def _tiny_spec(tmp_path, **changes) -> str:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "study": "tiny", "fixed": {"epochs": 1, "width": 0.5, "subset": 20, "wandb_mode": "disabled"},
        "grid": {"model": ["fc"], "dataset": ["digits"]}, **changes}))
    return str(spec)


def test_a_binary_config_file_exits_2_with_a_message(tmp_path, capsys) -> None:
    config = tmp_path / "weights.bin"
    config.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: --config {config}: {config}: not a YAML text file (byte 0x89 at offset 0" in err
    assert "Traceback" not in err and "UnicodeDecodeError" not in err
    assert not out.exists()


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model: fc\nepochs: 1\ndataset: digits\nepochs: 3\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "key 'epochs' is given twice (lines 2 and 4); keep one" in err
    assert not out.exists()


def test_more_threads_than_cores_are_refused_by_train_and_sweep(tmp_path, capsys) -> None:
    cores = len(os.sched_getaffinity(0))
    out = tmp_path / "run"
    assert main(["train", "--model", "fc", *TINY, "--threads", "10000", "--out", str(out)]) == 2
    assert f"error: threads=10000: use 1 .. {cores} " in capsys.readouterr().err
    assert not out.exists()
    runs = tmp_path / "runs"
    assert main(["sweep", _tiny_spec(tmp_path), "--runs", str(runs), "--threads", "10000"]) == 2
    assert f"error: --threads=10000: use 1 .. {cores} " in capsys.readouterr().err
    spec = _tiny_spec(tmp_path, fixed={"epochs": 1, "threads": 10000, "wandb_mode": "disabled"})
    assert main(["sweep", spec, "--runs", str(runs)]) == 2
    assert "error: threads=10000: " in capsys.readouterr().err
    assert not runs.exists()


def test_more_levels_than_tested_are_refused_with_the_limit(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "fc", *TINY, "--precision", "N=100000", "--out", str(out)]) == 2
    assert "error: precision='N=100000': " in (err := capsys.readouterr().err)
    assert "2 <= N <= 257" in err
    assert not out.exists()
    runs = tmp_path / "runs"
    spec = _tiny_spec(tmp_path, grid={"model": ["fc"], "dataset": ["digits"], "bits": [4, 9]})
    assert main(["sweep", spec, "--runs", str(runs)]) == 2
    assert "grid.bits (line 7): N=512 levels is more than the 257 " in capsys.readouterr().err
    assert not runs.exists()
    # the limit itself is a level count the quantisers take
    assert main(["train", "--model", "fc", *TINY, "--precision", "N=257", "--out", str(out)]) == 0


def test_a_sqlite_path_that_is_a_directory_leaves_nothing(tmp_path, capsys) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    runs = tmp_path / "runs"
    code = main(["sweep", _tiny_spec(tmp_path), "--runs", str(runs), "--storage",
                 f"sqlite:///{folder}"])
    assert code == 2
    assert f"{folder} is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "tiny.yaml"]
    assert list(folder.iterdir()) == []


def test_a_flag_that_needs_an_integer_says_an_integer(tmp_path, capsys) -> None:
    from suite.run.config import flag_help

    assert main(["train", "--epochs", "two", "--out", str(tmp_path / "run")]) == 2
    assert "error: epochs='two': must be an integer" in capsys.readouterr().err
    assert main(["train", "--lr", "fast", "--out", str(tmp_path / "run")]) == 2
    assert "error: lr='fast': must be a number" in capsys.readouterr().err
    shown = flag_help("precision")
    assert "a level count 'N=<int>' with 2 <= N <= 257 (e.g. 'N=7')" in shown
    assert "=2..>" not in shown
