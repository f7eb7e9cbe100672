"""RunResult: one flat JSON record per run, the row a sweep stores and a report reads.

``CONTRACT_FIELDS`` are promised to the report and to users' notebooks; more may be added.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import suite

CONTRACT_FIELDS = (
    "model", "dataset", "precision", "levels", "bits", "zero", "augment", "epochs", "seed", "lr",
    "width", "params", "params_quantized", "train_loss", "val_loss", "val_acc", "best_val_acc",
    "best_epoch", "test_acc", "diverged", "diverged_epoch", "loss_spikes", "max_val_acc_drop",
    "flip_rate", "weight_bits", "fp32_bytes", "quantized_bytes", "compression", "fit_seconds",
)
LM_FIELDS = ("val_ppl", "test_ppl")


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout the suite runs from, when there is one. Read once per process:
    a long-lived worker runs the code it imported, even if the checkout moves on meanwhile."""
    root = Path(suite.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(device: str) -> dict[str, Any]:
    return {
        "version": suite.__version__,
        "git_commit": os.environ.get("BITSWEEP_GIT_COMMIT") or git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device,
        "host": platform.node(),
    }


def clean(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null so every reader agrees."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, torch.Tensor):
        return clean(value.item())
    return value


def write_result(result: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: clean(v) for k, v in result.items()}, indent=1, sort_keys=True))
    os.replace(tmp, path)  # a killed run never leaves half a result.json
