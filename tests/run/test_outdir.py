"""A run directory always holds one run: `bitsweep train --out` onto a finished run is refused
unless --overwrite, and a run that does not finish never harms or mixes with the finished one."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from suite.cli import main
from suite.run.config import ConfigError, RunConfig
from suite.run.tracking import read_offline_run
from suite.run.train import train

pytestmark = pytest.mark.slow

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
