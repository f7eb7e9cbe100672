"""Weights & Biases: offline by default, online only with a key, and never a prompt or a hang."""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any

_warned = False


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai")
                                            .removeprefix("https://").removeprefix("http://"))
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_mode(requested: str) -> str:
    """``online`` without a key would prompt for one: fall back to offline and say so once."""
    global _warned
    if requested == "online" and not has_wandb_key():
        if not _warned:
            print("bitsweep: no W&B API key (WANDB_API_KEY or `wandb login`); logging offline. "
                  "Upload later with `wandb sync <dir>/wandb/offline-run-*`.", file=sys.stderr)
            _warned = True
        return "offline"
    return requested


def quiet_wandb_env() -> None:
    # Set before wandb starts: no login prompt, no console capture, no banner.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "60")


def make_logger(*, mode: str, project: str, group: str, name: str, save_dir: Path,
                config: dict[str, Any], tags: list[str]) -> Any:
    """Lightning's WandbLogger for one run, or None when W&B is disabled."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        return None
    quiet_wandb_env()
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    save_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project, group=group[:128], name=name, save_dir=str(save_dir), mode=mode,
        config=config, tags=[t[:64] for t in tags], job_type="train", log_model=False,
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
    )


def finish(logger: Any, summary: dict[str, Any], *, failed: bool = False) -> str | None:
    """Write the summary and close the run, so the next run in this process is a new one.
    Returns the run's local directory."""
    if logger is None:
        return None
    run = logger.experiment
    run.summary.update({k: v for k, v in summary.items() if v is not None})
    run_dir = getattr(run, "dir", None)
    run.finish(exit_code=1 if failed else 0)
    return str(Path(run_dir).parent) if run_dir else None
