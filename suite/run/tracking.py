"""Weights & Biases: offline by default, online only with a key, and never a prompt or a hang.

One ``wandb.init`` per run, made here (not by Lightning's WandbLogger, which would pass settings
newer wandb warns about and reuse a run left open by someone else): ``reinit="create_new"`` gives
every train() call its own run even in a process that already has one, and ``finish`` closes it,
so many runs in one worker stay separate. The logger handed to Lightning wraps that run.

``read_offline_run`` reads an offline run's ``.wandb`` file back (config, summary, group, tags)
without a server, so tests and users can check what was logged before ``wandb sync``.
"""

from __future__ import annotations

import json
import netrc
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_warned: set[str] = set()


def _say_once(key: str, message: str) -> None:
    if key not in _warned:
        print(f"bitsweep: {message}", file=sys.stderr)
        _warned.add(key)


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = (os.environ.get("WANDB_BASE_URL", "api.wandb.ai")
            .removeprefix("https://").removeprefix("http://").rstrip("/"))
    try:
        auth = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def _sync_hint(save_dir: Path | None) -> str:
    where = f"{save_dir}/wandb" if save_dir is not None else "<dir>/wandb"
    return f"Upload later with `wandb sync {where}/offline-run-*`."


def resolve_mode(requested: str, save_dir: Path | None = None) -> str:
    """``online`` without a key would prompt for one: fall back to offline and say so once."""
    if requested == "online" and not has_wandb_key():
        _say_once("no-key", "no W&B API key (WANDB_API_KEY or `wandb login`); logging offline. "
                            + _sync_hint(save_dir))
        return "offline"
    return requested


# Seconds the reachability check waits for a TCP connection to the W&B host (or its proxy).
REACH_SECONDS = 3.0
# This process's verdict on the W&B server: None until checked, then True (online works) or False
# (unreachable, or an online start failed): every later run of the process logs offline.
_online_ok: bool | None = None


def wandb_endpoint() -> tuple[str, str, int]:
    """The W&B server runs would talk to, as (url, host, port): ``WANDB_BASE_URL`` or W&B's
    cloud, reached through ``HTTPS_PROXY``/``HTTP_PROXY`` when one is set."""
    url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    scheme = "http" if url.startswith("http://") else "https"
    proxy = next((os.environ[k] for k in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
                  if os.environ.get(k)), None)
    target = urlsplit(proxy if proxy else url if "://" in url else f"https://{url}")
    default_port = 80 if target.scheme == "http" else 443
    return url, target.hostname or "", target.port or default_port


def unreachable(timeout: float = REACH_SECONDS) -> str | None:
    """Why the W&B server cannot be reached (a few seconds at most), or None when it can: a
    TCP connection to its host, which is what ``wandb.init`` would otherwise wait ~60 s for.
    Name resolution runs in a thread, so a resolver that hangs cannot stall the caller."""
    url, host, port = wandb_endpoint()
    if not host:
        return f"WANDB_BASE_URL={url!r} names no host"
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{type(err).__name__}: {err}")

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout:g} s"


def decide_mode(requested: str, save_dir: Path | None = None) -> str:
    """The mode runs of this process (a sweep: of the whole sweep) actually use. ``online`` is
    checked once: without a key, or with the server out of reach, every run logs offline, and
    that is said once with the ``wandb sync`` command that uploads the runs later."""
    global _online_ok
    mode = resolve_mode(requested, save_dir)
    if mode != "online":
        return mode
    if _online_ok is None:
        why = unreachable()
        _online_ok = why is None
        if why is not None:
            url = wandb_endpoint()[0]
            _say_once("unreachable", f"W&B server {url} is not reachable ({why}); logging "
                                     f"offline for the rest of this process. " + _sync_hint(save_dir))
    return "online" if _online_ok else "offline"


def _online_failed(err: BaseException, save_dir: Path | None) -> None:
    global _online_ok
    _online_ok = False
    _say_once("online-failed", f"W&B online start failed ({type(err).__name__}: {err}); logging "
                               f"offline for the rest of this process. " + _sync_hint(save_dir))


def quiet_wandb_env() -> None:
    # Set before wandb starts: no login prompt, no console capture, no banner.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    # a server that answers the reachability check but not wandb.init costs this once per process
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")


_SCANS: dict[tuple[Any, ...], Any] = {}


@contextmanager
def cached_scan(module: Any, name: str) -> Iterator[None]:
    """Within the block, ``module.name(**kwargs)`` (a scan of the installed packages' metadata)
    answers from a per-process cache: the packages do not change between the trials of one
    worker, and each scan parses every package's metadata again (W&B's requirements list at each
    init: 0.17 s of an offline init's 0.2 s here; Lightning's callback entry points at each
    Trainer(): 11 of its 12 ms). The answers are the same, so is what is written (the run's
    requirements.txt). Does nothing if the library no longer has ``name``."""
    original = getattr(module, name, None)
    if original is None:
        yield
        return

    def cached(*args: Any, **kwargs: Any) -> Any:
        key = (module.__name__, name, args, tuple(sorted(kwargs.items())))
        if key not in _SCANS:
            result = original(*args, **kwargs)
            # a generator can be read once; keep what it yields
            _SCANS[key] = list(result) if isinstance(result, Iterator) else result
        return _SCANS[key]

    setattr(module, name, cached)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextmanager
def redacted_argv() -> Iterator[None]:
    """Within the block, ``sys.argv`` with every URL's password hidden (storage.redact).

    ``wandb.init`` records the command line (Settings' ``_args``: ``sys.argv[1:]``, read when the
    run starts) in the run's metadata, which ``wandb sync`` uploads; a ``--storage`` URL's password
    must not go with it, while the rest of the metadata (host, Python, GPU) is worth keeping."""
    from suite.sweep.storage import redact

    original = sys.argv
    sys.argv = [redact(arg) for arg in original]
    try:
        yield
    finally:
        sys.argv = original


def _init(mode: str, **kwargs: Any) -> Any:
    import wandb.util

    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
    # the run's requirements.txt lists the installed packages (the same list every time)
    with cached_scan(wandb.util, "working_set"), redacted_argv():
        return wandb.init(mode=mode, reinit="create_new", settings=settings, **kwargs)


def start_run(*, mode: str, project: str, group: str, name: str, save_dir: Path,
              config: dict[str, Any], tags: list[str], final_dir: Path | None = None) -> Any:
    """Start this run's W&B run; None when W&B is disabled. An online start that fails (no
    network, server down) falls back to offline instead of failing the run."""
    return start(mode=mode, save_dir=save_dir, project=project, group=group, name=name,
                 config=config, tags=tags, job_type="train", final_dir=final_dir)


def start(*, mode: str, save_dir: Path, job_type: str, final_dir: Path | None = None,
          **kwargs: Any) -> Any:
    """A W&B run of ``job_type`` in ``save_dir/wandb/``; None when disabled. Online is decided
    once per process (``decide_mode``); an online start that fails anyway (the server went away)
    logs this run and every later one of the process offline. ``final_dir``: where ``save_dir``
    will be when the run ends (a run is written into a staged directory that is renamed), which
    is the folder the ``wandb sync`` hint must name."""
    shown = final_dir or save_dir
    mode = decide_mode(mode, shown)
    if mode == "disabled":
        return None
    quiet_wandb_env()
    save_dir.mkdir(parents=True, exist_ok=True)
    kwargs.update(group=kwargs["group"][:128], tags=[t[:64] for t in kwargs.get("tags", [])],
                  dir=str(save_dir), job_type=job_type)
    if mode == "online":
        try:
            return _init("online", **kwargs)
        except Exception as err:  # any failure to reach the server means offline
            _online_failed(err, shown)
    return _init("offline", **kwargs)


def make_logger(run: Any) -> Any:
    """Lightning's WandbLogger around a started run. Its history gets one row per epoch (the
    run's curves.csv row: losses, accuracies, perplexity, lr, gradient norm, flip rate) and the
    test metrics, all plotted against ``epoch``, the curves' own 1-based epoch."""
    if run is None:
        return None
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(experiment=run, log_model=False)
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch", step_sync=True)
    return logger


def run_dir(run: Any) -> str | None:
    """The run's local directory (``.../wandb/offline-run-<time>-<id>``)."""
    files = getattr(run, "dir", None) if run is not None else None
    return str(Path(files).parent) if files else None


def finish(run: Any, summary: dict[str, Any], *, exit_code: int = 0) -> str | None:
    """Write the summary and close the run, so the next run in this process is a new one.
    Returns the run's local directory."""
    if run is None:
        return None
    where = run_dir(run)
    try:
        if summary:
            run.summary.update({k: v for k, v in summary.items() if v is not None})
    finally:
        run.finish(exit_code=exit_code)
    return where


# --- reading an offline run back -------------------------------------------------------------
# A .wandb file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then
# 32 KiB blocks of records, each with a 7-byte header (crc32, length, type: full/first/middle/last)
# holding one serialised wandb Record protobuf (or a piece of one). Checksums are not verified:
# the file is only read back for inspection.

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < 7:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += room  # zero padding up to the next block
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(run_directory: str | Path, *, wait: float = 0.0) -> dict[str, Any]:
    """Config, summary, history (one dict per logged row), metrics (each defined metric's step
    metric), group, tags, name, id, job type, project and exit code of a local (offline) W&B run.

    ``run.finish()`` returns before wandb's service has written the last records (summary, exit)
    to the file (here: up to ~50 ms later); ``wait`` seconds re-reads until the exit record is
    there. ``exit_code`` stays None for a run that has not finished."""
    directory = Path(run_directory)
    files = sorted(directory.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {directory}")
    deadline = time.monotonic() + wait
    while True:
        out = _read_run_file(files[0])
        if out["exit_code"] is not None or time.monotonic() >= deadline:
            return out
        time.sleep(0.05)


def _read_run_file(path: Path) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"config": {}, "summary": {}, "group": None, "tags": [], "name": None,
                           "id": None, "exit_code": None, "job_type": None, "project": None,
                           "history": [], "metrics": {}}

    def apply(items: Any, target: dict[str, Any]) -> None:
        for item in items:
            key = item.key or "/".join(item.nested_key)
            target[key] = json.loads(item.value_json)

    for raw in _records(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(group=rec.run.run_group, tags=list(rec.run.tags), name=rec.run.display_name,
                       id=rec.run.run_id, job_type=rec.run.job_type, project=rec.run.project)
            apply(rec.run.config.update, out["config"])
        elif kind == "metric":  # define_metric: a name (or glob) and its step metric
            out["metrics"][rec.metric.name or rec.metric.glob_name] = rec.metric.step_metric
        elif kind == "history":
            row: dict[str, Any] = {}
            apply(rec.history.item, row)
            out["history"].append(row)
        elif kind == "config":
            apply(rec.config.update, out["config"])
        elif kind == "summary":
            apply(rec.summary.update, out["summary"])
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    # W&B stores each config value as {"value": v} (plus internal "_wandb")
    out["config"] = {k: v.get("value") if isinstance(v, dict) and "value" in v else v
                     for k, v in out["config"].items() if k != "_wandb"}
    return out
