"""Which torch device a run trains on: RunConfig.device resolved, its availability checked.

Its own module so that train.py (one run) and ranks.py (the data-parallel launcher) both use it
without importing each other.
"""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: cuda, else mps, else cpu; any other name as torch reads it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)
