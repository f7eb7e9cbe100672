"""A run directory always holds one run: `bitsweep train --out` onto a finished run is refused
unless --overwrite, and a run that does not finish never harms or mixes with the finished one."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest

from suite.cli import main
from suite.run.config import ConfigError, RunConfig
from suite.run.outdir import check_out
from suite.run.tracking import read_offline_run
from suite.run.train import train

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

TINY = ["--model", "fc", "--dataset", "digits", "--subset", "20", "--width", "0.5", "--epochs", "2"]


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("CI", "true")


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes, once the run's W&B file is
    complete (W&B's service writes its last records just after the run returns); of W&B's
    service logs only the names: the service, started by a process's first run, goes on logging
    every later run of the process into that first run's logs folder."""
    read_offline_run((root / "wandb_run.txt").read_text().strip(), wait=10)
    return {str(p.relative_to(root)): b"" if p.name in _SERVICE_LOGS else p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


_SERVICE_LOGS = ("debug-internal.log", "debug-core.log")


class _Interrupt(L.Callback):
    """Ctrl-C in the middle of the second epoch, as Lightning sees a real one."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def test_a_finished_run_is_refused_without_overwrite_and_left_as_it_was(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--seed", "0", "--out", str(out)]) == 0
    before = _files(out)
    assert "result.json" in before and "model.safetensors" in before
    capsys.readouterr()
    assert main(["train", *TINY, "--seed", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: out='{out}': holds a finished run (result.json)" in err and "--overwrite" in err
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_replaces_the_run_whole(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--seed", "0", "--out", str(out)]) == 0
    first = _files(out)
    assert main(["train", *TINY, "--seed", "1", "--overwrite", "--out", str(out)]) == 0
    second = _files(out)
    assert b'"seed": 1' in second["config.json"] and second["result.json"] != first["result.json"]
    # nothing of the first run is left: its W&B run went with it
    old_wandb = {name for name in first if name.startswith("wandb/offline-run-")}
    assert old_wandb and not old_wandb & set(second)
    # the recorded W&B run is where the run directory is now, not where it was written
    where = Path((out / "wandb_run.txt").read_text().strip())
    assert where.is_dir() and where.parent == out / "wandb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_interrupted_rerun_leaves_the_finished_run_intact(tmp_path, capsys) -> None:
    """The first run's files, byte for byte, after a second run into the same directory was
    interrupted mid-fit (it used to delete result.json first and leave its own config beside
    the old weights)."""
    out = tmp_path / "run"
    first = RunConfig(model="fc", dataset="digits", subset=20, width=0.5, epochs=2, seed=0)
    train(first, out)
    before = _files(out)
    with pytest.raises(KeyboardInterrupt):
        train(first.replace(seed=1, epochs=3), out, callbacks=[_Interrupt()], overwrite=True)
    assert _files(out) == before
    assert "the finished run in" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staged directory left


def test_an_interrupted_first_run_leaves_a_run_without_a_result(tmp_path) -> None:
    """Nothing finished to keep: what the run wrote is its directory, and it does not look
    finished (no result.json); a later run may take the directory without --overwrite."""
    out = tmp_path / "run"
    config = RunConfig(model="fc", dataset="digits", subset=20, width=0.5, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(config, out, callbacks=[_Interrupt()], overwrite=False)
    assert not (out / "result.json").exists()
    assert len((out / "curves.csv").read_text().splitlines()) == 2  # header + the finished epoch
    assert (out / "config.json").is_file()
    train(config.replace(epochs=1), out, overwrite=False)
    assert (out / "result.json").is_file()
    assert len((out / "curves.csv").read_text().splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("other", ["notes.txt", "data"])
def test_a_directory_of_other_files_is_never_taken(tmp_path, other) -> None:
    """`--out .` or `--out ~` must not replace someone's files, --overwrite or not."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / other).write_text("keep me")
    with pytest.raises(ConfigError, match=rf"holds files that are not a run's \({other}\)"):
        train(RunConfig(model="fc", dataset="digits", subset=20, epochs=1), out, overwrite=True)
    assert [p.name for p in out.iterdir()] == [other] and (out / other).read_text() == "keep me"


# --- what a killed process leaves beside the run directory --------------------------------------


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _run_dir(path: Path, *, result: bool) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{}")
    if result:
        (path / "result.json").write_text('{"val_acc": 0.5}')
    return path


def _leftover(out: Path, kind: str, *, result: bool, host: str | None = None,
              pid: int | None = None) -> Path:
    host = host or re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())
    name = f".{out.name}.{kind}-{host}-{_dead_pid() if pid is None else pid}"
    return _run_dir(out.parent / name, result=result)


def test_a_killed_runs_unfinished_files_beside_a_finished_run_are_removed(tmp_path, capsys):
    out = _run_dir(tmp_path / "run", result=True)
    _leftover(out, "partial", result=False)
    check_out(out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "result.json").read_text() == '{"val_acc": 0.5}'
    assert "left by a killed run" in capsys.readouterr().err


def test_a_killed_first_run_becomes_the_run_directory_without_a_result(tmp_path):
    """As an interrupted run leaves it: visible under its name, not finished."""
    out = tmp_path / "run"
    _leftover(out, "partial", result=False)
    check_out(out, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "config.json").is_file() and not (out / "result.json").exists()


def test_a_killed_run_that_had_finished_takes_its_place(tmp_path):
    out = _run_dir(tmp_path / "run", result=False)
    stage = _leftover(out, "partial", result=True)
    (stage / "curves.csv").write_text("epoch\n1\n")
    check_out(out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "result.json").is_file() and (out / "curves.csv").is_file()


def test_a_run_moved_aside_by_a_killed_replacement_is_put_back(tmp_path):
    """Killed between its two renames: the earlier run is back, refused without --overwrite."""
    out = tmp_path / "run"
    _leftover(out, "old", result=True)
    with pytest.raises(ConfigError, match="holds a finished run"):
        check_out(out, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "result.json").read_text() == '{"val_acc": 0.5}'


def test_live_runs_other_machines_runs_and_other_files_are_never_touched(tmp_path):
    out = _run_dir(tmp_path / "run", result=True)
    live = _leftover(out, "partial", result=False, pid=os.getpid())
    elsewhere = _leftover(out, "partial", result=False, host="another-host")
    check_out(out, overwrite=True)
    assert live.is_dir() and elsewhere.is_dir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    dead = _leftover(mine, "partial", result=True)
    with pytest.raises(ConfigError, match="not a run's"):
        check_out(mine, overwrite=True)
    assert dead.is_dir() and [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_a_run_killed_mid_fit_is_cleaned_up_by_the_next_run_into_its_directory(tmp_path):
    """SIGKILL while `bitsweep train` fits (its config written, 10^5 epochs to go): the next
    run into the same directory finds the killed run's files as a run without a result, takes
    the directory without --overwrite, and leaves one run, finished."""
    out = tmp_path / "run"
    env = {**os.environ, "CI": "true", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "suite", "train", *TINY[:-1], "100000",
                             "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".run.partial-*/config.json")):  # the run has begun
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    left = list(tmp_path.glob(".run.partial-*"))
    assert not out.exists() and len(left) == 1 and not (left[0] / "result.json").exists()
    assert main(["train", *TINY[:-1], "1", "--wandb-mode", "disabled", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "result.json").is_file()
