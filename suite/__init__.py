"""bitsweep: how much accuracy and stability do networks lose with 1 to ~4 bits per weight?"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Loaded on first use: ``import suite`` stays free of torch and Lightning (the report reads
# results without them).
_EXPORTS = {"BitsweepQAT": "suite.run.qat"}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'suite' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
