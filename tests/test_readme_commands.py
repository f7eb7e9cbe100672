"""The README's two commands in their order: the main job (`nox -s sweep`: `bitsweep sweep SPEC`
then `bitsweep report SPEC`, both with their defaults) and then the tests. The tests compare the
committed reference reports in reports/<study>/ with a rebuild, so the main job must never write
there, even for a study named like a reference one: its report goes beside its runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"study": "default",  # the name of a committed reference study, on purpose
        "fixed": {"dataset": "digits", "epochs": 1, "batch_size": 256, "width": 0.25,
                  "model": "fc", "wandb_mode": "disabled"},
        "grid": {"precision": ["fp32", 1]}}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _bitsweep(cwd: Path, *args: str) -> None:
    env = {**os.environ, "CI": "true", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "suite", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_main_job_leaves_the_committed_reports_alone(tmp_path: Path) -> None:
    # A clone's layout: sweeps/ and the committed reports/default/ beside them.
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "default.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    committed = tmp_path / "reports" / "default"
    shutil.copytree(ROOT / "reports" / "default", committed)
    before = _digest(committed)

    _bitsweep(tmp_path, "sweep", "sweeps/default.yaml", "--workers", "1", "--threads", "1")
    _bitsweep(tmp_path, "report", "sweeps/default.yaml", "--formats", "png")

    assert _digest(committed) == before  # what the tests compare against is untouched
    own = tmp_path / "runs" / "default" / "report"
    assert (own / "report.md").is_file() and (own / "results.csv").is_file()
    assert sorted(p.name for p in (own / "figures").iterdir())  # its figures are there too
