"""`bitsweep train`: in-process through suite.cli.main (cheap), and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from suite.cli import main
from suite.run.tracking import read_offline_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "digits", "--subset", "20", "--width", "0.5", "--epochs", "1"]


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("CI", "true")


@pytest.mark.parametrize(("flags", "field"), [
    (["--precision", "0.5"], "precision"),
    (["--model", "resnet"], "model"),
    (["--epochs", "-1"], "epochs"),
    (["--epochs", "two"], "epochs"),
    (["--lr", "0"], "lr"),
    (["--augment", "heavy"], "augment"),
    (["--quantize-bias", "maybe"], "quantize_bias"),
    (["--device", "cuda"], "device"),  # found while preparing the run: no CUDA here
    (["--model", "lm"], "dataset"),    # a language model on an image dataset
])
def test_bad_flag_exits_2_names_the_field_and_writes_nothing(tmp_path, capsys, flags, field) -> None:
    out = tmp_path / "run"
    code = main(["train", "--model", "cnn", *TINY, *flags, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{field}=" in err and "bitsweep train: error:" in err
    assert not out.exists()


def test_config_file_errors_exit_2(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": "cnn", "epoch": 3}))
    assert main(["train", "--config", str(bad), "--out", str(out)]) == 2
    assert "epoch" in capsys.readouterr().err
    assert not out.exists()


def test_config_file_and_flags(tmp_path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": "fc", "dataset": "digits", "subset": 20,
                                      "precision": 2.32, "epochs": 3, "width": 0.5}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "1", "--tags", "a,b",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads((out / "result.json").read_text())
    assert printed["model"] == result["model"] == "fc"
    assert result["precision"] == "2.32" and result["levels"] == 5
    assert result["epochs"] == 1  # the flag overrides the file
    run = read_offline_run((out / "wandb_run.txt").read_text().strip(), wait=10)
    assert run["config"]["tags"] == ["a", "b"] and {"a", "b"} <= set(run["tags"])


def test_absurd_lr_exits_0_with_a_diverged_result(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "cnn", *TINY, "--lr", "1e6", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["diverged"] is True
    result = json.loads((out / "result.json").read_text())
    assert result["diverged"] is True and result["diverged_epoch"] == 1


def test_real_subprocess(tmp_path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "CI": "true",
           "PYTHONPATH": str(ROOT)}
    out = tmp_path / "run"
    ok = subprocess.run([sys.executable, "-m", "suite", "train", "--model", "cnn", *TINY,
                         "--precision", "2.32", "--out", str(out)],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""  # quiet in CI: no Lightning tips, no warnings, no W&B banner
    printed = json.loads(ok.stdout)
    assert printed["precision"] == "2.32"
    result = json.loads((out / "result.json").read_text())
    run = read_offline_run((out / "wandb_run.txt").read_text().strip(), wait=10)
    assert run["config"]["levels"] == result["levels"] == 5
    assert run["exit_code"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written outside --out

    bad = subprocess.run([sys.executable, "-m", "suite", "train", "--precision", "0.5", "--out",
                          str(tmp_path / "bad")], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert bad.returncode == 2
    assert "precision=" in bad.stderr
    assert not (tmp_path / "bad").exists()
