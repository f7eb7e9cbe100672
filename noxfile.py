"""Sessions: tests, lint, sweep, report, bench.

torch is installed before the project from ``BITSWEEP_TORCH`` (default ``torch==2.13.0``, the CPU
wheel on this machine's disk): installing lightning first would pull a multi-GB CUDA build.
Venvs are reused, and the install is skipped when pyproject.toml and the torch spec are unchanged,
so a second run starts in seconds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
TORCH = os.environ.get("BITSWEEP_TORCH", "torch==2.13.0")


def _install(session: nox.Session, extras: str) -> None:
    stamp = Path(session.virtualenv.location) / ".bitsweep-install"
    key = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + TORCH.encode() + extras.encode()
    ).hexdigest()
    if stamp.exists() and stamp.read_text() == key:
        session.log("dependencies unchanged; skipping install")
        return
    # In a terminal pip's own output shows (a first install downloads for minutes and must not
    # look hung); CI's log stays quiet.
    quiet = bool(os.environ.get("CI"))
    session.log(f"installing {TORCH} first (a first run downloads it: a few minutes)")
    session.install(TORCH, silent=quiet)
    session.log("installing bitsweep and its dependencies")
    session.install("-e", f".[{extras}]" if extras else ".", silent=quiet)
    stamp.write_text(key)


def _quiet_env() -> dict[str, str]:
    # Never prompt for a W&B login; one torch thread per worker is decided by the suite itself.
    return {"WANDB_SILENT": "true", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pytest args pass through: nox -s tests -- -k quant). The hf extra
    (transformers) is installed so the Hugging Face examples run in CI."""
    _install(session, "dev,hf")
    session.run("pytest", *(session.posargs or ["-q"]), env=_quiet_env())


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def sweep(session: nox.Session) -> None:
    """The main job: the default study on embedded data, then its report.

    nox -s sweep -- sweeps/other.yaml --workers 2
    """
    _install(session, "")
    args = session.posargs or ["sweeps/default.yaml"]
    session.run("bitsweep", "sweep", *args, env=_quiet_env())
    spec = next((a for a in args if a.endswith((".yaml", ".yml"))), "sweeps/default.yaml")
    # The report reads the same storage the sweep wrote.
    shared = [a for flag in ("--runs", "--storage") for a in _option(args, flag)]
    session.run("bitsweep", "report", spec, *shared, env=_quiet_env())


def _option(args: list[str], flag: str) -> list[str]:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return [flag, args[i + 1]]
        if arg.startswith(flag + "="):
            return [arg]
    return []


@nox.session
def report(session: nox.Session) -> None:
    """Rebuild a study's report from its storage (default: the default study, into
    runs/default/report/; `-- sweeps/x.yaml --out reports` rebuilds a committed reference)."""
    _install(session, "")
    session.run("bitsweep", "report", *(session.posargs or ["sweeps/default.yaml"]),
                env=_quiet_env())


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks (results go to BENCHMARKS.md by hand)."""
    _install(session, "dev,bench,hf")
    for script in session.posargs or sorted(str(p) for p in (ROOT / "bench").glob("bench_*.py")):
        session.run("python", script, env=_quiet_env())
