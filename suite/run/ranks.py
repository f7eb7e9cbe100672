"""Data-parallel runs (``RunConfig.devices > 1``): the ranks, launched by train() itself.

train() launches the ranks itself, as processes of its own (fork on CPU; spawn on CUDA, where a
forked child cannot use a CUDA the caller has initialised), each running train() as one rank,
and hands Lightning's DDPStrategy a LightningEnvironment that sees LOCAL_RANK set, i.e. ranks
created externally, as under torchrun. Lightning's own launchers do not fit a library call in a
long-lived sweep worker: "ddp" re-executes sys.argv (pytest's or the worker's command line);
"ddp_spawn"/"ddp_fork" run the fit in children but hand the caller back only rank 0's weights
and callback_metrics (not the epoch rows, the W&B run or the files), ddp_spawn pickles the
Trainer with its W&B logger and callbacks, and a rank's error reaches the caller as a
ProcessRaisedException (Optuna's TrialPruned would lose its type). Here rank 0 is a whole run
(W&B run, curves, files, result) and the caller gets its result or its exception as raised.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from suite.run.config import ConfigError, RunConfig
from suite.run.devices import resolve_device

RANK_VAR = "BITSWEEP_DDP_RANK"  # set in the processes train() launched: they are the ranks
_AFTER_RANK0_S = 60.0  # how long the other ranks may take to exit once rank 0 has its result
_ERROR_GRACE_S = 15.0  # how long the other ranks' errors are awaited once one rank failed


def shard_of(config: RunConfig) -> tuple[int, int]:
    """(rank, ranks) of this process in its data-parallel run; (0, 1) for one device."""
    if config.devices == 1 or RANK_VAR not in os.environ:
        return 0, 1
    return int(os.environ[RANK_VAR]), config.devices


def rank_gpu(config: RunConfig, shard: tuple[int, int]) -> torch.device:
    if torch.cuda.device_count() < shard[1]:
        raise ConfigError(f"devices={config.devices}: this machine has "
                          f"{torch.cuda.device_count()} GPU(s); lower devices")
    torch.cuda.set_device(shard[0])
    return torch.device("cuda", shard[0])


def check_shares(config: RunConfig, examples: int) -> None:
    """Every rank must get an example of every batch (an empty share has no mean loss)."""
    last = examples % config.batch_size
    if config.devices > 1 and 0 < last < config.devices:
        raise ConfigError(f"devices={config.devices}: the last training batch holds {last} "
                          f"example(s) of {examples}, fewer than one per device; change "
                          f"batch_size={config.batch_size} or subset")


def trainer_devices(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """The Trainer's devices (and, data-parallel, its DDP strategy)."""
    if config.devices == 1:
        return {"devices": [device.index or 0] if device.type == "cuda" else 1}
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    cuda = device.type == "cuda"
    return {"devices": list(range(config.devices)) if cuda else config.devices,
            "strategy": DDPStrategy(cluster_environment=LightningEnvironment(),
                                    process_group_backend="nccl" if cuda else "gloo"),
            # BatchNorm statistics over the global batch, as one device computes them; torch's
            # SyncBatchNorm runs on GPUs only, so CPU ranks normalise over their own shares
            "sync_batchnorm": cuda}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(run: Callable[..., dict[str, Any]], config: RunConfig, out_dir: str | Path,
           **kwargs: Any) -> dict[str, Any]:
    """Run ``run(config, out_dir, **kwargs)`` (suite.run.train.train) as each of
    ``config.devices`` ranks and return rank 0's result (or raise the first error a rank raised).
    ``run`` is pickled for a spawned rank: a module-level function. The caller's callbacks run on
    rank 0 only, with its W&B run; one that ends the fit early must raise (as Optuna's pruning
    does), since the other ranks cannot see it."""
    try:
        cuda = resolve_device(config.device).type == "cuda"
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"device={config.device!r}: {err}") from None
    ctx = multiprocessing.get_context("spawn" if cuda else "fork")
    port, procs, conns = _free_port(), [], []
    try:
        for rank in range(config.devices):
            receive, send = ctx.Pipe(duplex=False)
            rank_kwargs = kwargs if rank == 0 else {**kwargs, "callbacks": (), "progress": False}
            proc = ctx.Process(target=_rank_main, name=f"bitsweep-rank{rank}",
                               args=(run, rank, port, config, str(out_dir), rank_kwargs, send))
            try:
                proc.start()
            except (pickle.PicklingError, TypeError, AttributeError) as err:
                raise ConfigError(f"devices={config.devices} on CUDA starts fresh processes, which "
                                  f"get the callbacks pickled: {err}") from None
            finally:
                send.close()
            procs.append(proc)
            conns.append(receive)
        hint = (" (spawned on CUDA, a rank unpickles its arguments: the callbacks' classes must be "
                "importable, not defined in __main__ or a function)" if cuda else "")
        return _collect(procs, conns, hint)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # a rank left waiting on a collective that will never come
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _collect(procs: list[Any], conns: list[Any], hint: str = "") -> dict[str, Any]:
    """Wait for the ranks' answers: rank 0's result, or the error that stopped the run. A rank's
    error makes the others fail too (a peer left the collective), so the ranks' errors of the
    next few seconds are gathered and the cause raised: rank 0's first, a connection error last."""
    from multiprocessing.connection import wait

    pending = dict(zip(conns, range(len(conns))))
    result: dict[str, Any] | None = None
    errors: dict[int, BaseException] = {}
    deadline = math.inf
    while pending:
        timeout = _AFTER_RANK0_S if result is not None else None
        if errors:
            timeout = max(0.0, deadline - time.monotonic())
        ready = wait(list(pending), timeout=timeout)
        if not ready:
            break  # rank 0 is done (or failed); a rank still running cannot change that
        for conn in ready:
            rank = pending.pop(conn)
            try:
                kind, payload = conn.recv()
            except EOFError:
                procs[rank].join(5)
                kind, payload = "error", RuntimeError(
                    f"rank {rank} of devices={len(procs)} exited (code {procs[rank].exitcode}) "
                    f"without a result; its error is printed above{hint}")
            if kind == "error":
                errors[rank] = payload
                deadline = min(deadline, time.monotonic() + _ERROR_GRACE_S)
            elif rank == 0:
                result = payload
    if errors:
        causes = [err for _, err in sorted(errors.items()) if not _lost_peer(err)]
        raise (causes or [errors[min(errors)]])[0]
    assert result is not None
    return result


def _lost_peer(err: BaseException) -> bool:
    """A rank's error that only says another rank went away (gloo/NCCL lost its connection)."""
    dist_error = getattr(torch.distributed, "DistError", ())
    text = str(err)
    return isinstance(err, dist_error) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL"))


def _rank_main(run: Callable[..., dict[str, Any]], rank: int, port: int, config: RunConfig,
               out_dir: str, kwargs: dict[str, Any], conn: Any) -> None:
    """One rank's process: ``run`` (train()) as that rank; its answer goes back through
    ``conn``."""
    os.environ.update({RANK_VAR: str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0",
                       "WORLD_SIZE": str(config.devices), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    try:
        result = run(config, out_dir, **kwargs)
    except BaseException as err:  # the caller raises it: Ctrl-C, TrialPruned, ConfigError alike
        expected = (isinstance(err, (ConfigError, KeyboardInterrupt)) or _lost_peer(err)
                    or type(err).__name__ == "TrialPruned")
        if not expected:
            import traceback

            traceback.print_exc()  # where it happened, which the caller's traceback cannot show
        conn.send(("error", _portable(err)))
        raise SystemExit(1) from None
    conn.send(("ok", result if rank == 0 else None))


def _portable(err: BaseException) -> BaseException:
    """``err`` if it survives pickling, else a RuntimeError saying what it was."""
    try:
        return pickle.loads(pickle.dumps(err))
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")
