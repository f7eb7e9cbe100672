"""W&B online with no route to its server: one quick check per sweep, then offline.

The "server" is a closed port on 127.0.0.1 (bound, then released, so nothing listens there) and
the key is fake: nothing leaves the machine. Before the check, every trial waited in
``wandb.init`` for its timeout before falling back to offline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

SLACK_SECONDS = 15  # the bound: online-but-unreachable at most this much slower
SPEC = {
    "study": "unreachable",
    "fixed": {"dataset": "digits", "model": "fc", "epochs": 1, "batch_size": 256, "width": 0.25,
              "subset": 20},
    "grid": {"precision": ["fp32", 1, 2], "seed": [0, 1]},
    "workers": 2,
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(tmp_path: Path, write_spec, mode: str, env: dict[str, str]) -> tuple[float, str, Path]:
    runs = tmp_path / mode / "runs"
    spec = write_spec({**SPEC, "wandb": {"mode": mode, "project": "bitsweep-test"}},
                      name=f"{mode}.yaml")
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    start = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("bitsweep")), "sweep", str(spec), "--runs", str(runs),
         "--threads", "1"],
        env={**base, "CI": "true", "WANDB_SILENT": "true", **env}, capture_output=True,
        text=True, timeout=600, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return seconds, proc.stderr, runs / SPEC["study"]


def test_an_unreachable_server_costs_one_check_and_every_run_logs_offline(tmp_path, write_spec):
    offline_s, _, _ = sweep(tmp_path, write_spec, "offline", {})
    port = closed_port()
    online_s, err, study_dir = sweep(tmp_path, write_spec, "online", {
        "WANDB_API_KEY": "f" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"})
    assert online_s <= offline_s + SLACK_SECONDS, (online_s, offline_s)
    # said once, by the sweep, with the server and the command that uploads the runs later
    assert err.count("is not reachable") == 1, err
    assert f"127.0.0.1:{port}" in err
    assert f"wandb sync {study_dir}/wandb/offline-run-*" in err
    study = optuna.load_study(study_name=SPEC["study"],
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(
                                      str(study_dir / "optuna.journal"))))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and {t.state for t in trials} == {TrialState.COMPLETE}
    for trial in trials:
        where = Path((Path(trial.user_attrs["run_dir"]) / "wandb_run.txt").read_text().strip())
        assert where.parent == study_dir / "wandb" and where.name.startswith("offline-run-")
        assert list(where.glob("run-*.wandb")), where


def test_the_check_reads_the_configured_host_and_proxy(monkeypatch):
    from suite.run import tracking

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        open_port = server.getsockname()[1]
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{open_port}")
        assert tracking.wandb_endpoint()[1:] == ("127.0.0.1", open_port)
        assert tracking.unreachable() is None
        # W&B's cloud behind a proxy: the proxy is what must answer (never the cloud itself here)
        monkeypatch.delenv("WANDB_BASE_URL")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{open_port}")
        assert tracking.wandb_endpoint() == ("https://api.wandb.ai", "127.0.0.1", open_port)
        assert tracking.unreachable() is None
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    start = time.perf_counter()
    why = tracking.unreachable(timeout=1.0)
    assert why is not None and "Connection" in why, why
    assert time.perf_counter() - start < 2.0


def test_train_alone_decides_once_per_process(tmp_path, monkeypatch, capsys):
    from suite.run import tracking
    from suite.run.config import RunConfig
    from suite.run.train import train

    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(tracking, "_warned", set())
    monkeypatch.setattr(tracking, "_online_ok", None)
    checks = []
    real = tracking.unreachable
    monkeypatch.setattr(tracking, "unreachable", lambda *a, **k: checks.append(1) or real(*a, **k))
    config = RunConfig(model="fc", dataset="digits", subset=10, epochs=1, width=0.25,
                       precision="1", wandb_mode="online")
    start = time.perf_counter()
    for name in ("a", "b"):
        train(config, tmp_path / name)
    assert time.perf_counter() - start < 60  # two ~30-60 s init timeouts before
    assert len(checks) == 1
    err = capsys.readouterr().err
    assert err.count("is not reachable") == 1
    assert f"wandb sync {tmp_path / 'a'}/wandb/offline-run-*" in err
    for name in ("a", "b"):
        assert "offline-run-" in (tmp_path / name / "wandb_run.txt").read_text()


@pytest.fixture(autouse=True)
def _fresh_verdict():
    # the in-process tests must not inherit another test's verdict on the server
    from suite.run import tracking

    before = tracking._online_ok
    tracking._online_ok = None
    yield
    tracking._online_ok = before
