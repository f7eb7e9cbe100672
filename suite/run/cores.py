"""How many CPU threads a run may ask for: at most the cores this process may use.

Torch's CPU threads spin while they wait for work, so threads beyond the cores only take turns
on them: ``--threads 10000`` ran 700-2000x slower than the default without a word. A number
above the cores is refused as bad input.
"""

from __future__ import annotations

import os

from suite.run.config import ConfigError


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads: int | None, name: str = "threads") -> None:
    """Refuse (ConfigError naming ``name``) a thread count below 1 or above the usable cores;
    None (the default choice) passes."""
    if threads is None:
        return
    cores = usable_cores()
    if threads < 1 or threads > cores:
        raise ConfigError(f"{name}={threads}: use 1 .. {cores} (the CPU cores this machine gives "
                          f"the run; more threads than cores only slow it down), or leave it unset")
