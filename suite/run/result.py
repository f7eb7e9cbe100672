"""RunResult: one flat JSON record per run, the row a sweep stores and a report reads.

``RESULT_FIELDS`` is the one definition of that record: every field the trainer writes (besides
the RunConfig fields, which a result always carries whole), its type, its meaning, whether it is
promised to the report and to users' notebooks (``contract``), and the dtype of its column in the
report's results frame (``column``; None: the report keeps it as an extra column, as it comes).
The trainer's record (``run_result``), ``result.json``, the report's columns and dtypes and the
contract test all read this table.

Importing this module stays light (no torch): the report imports it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import suite


@dataclass(frozen=True)
class ResultField:
    name: str
    type: type  # of the JSON value; any field may also be null (not measured, or not finite)
    meaning: str
    contract: bool = False  # promised: present in every result.json (text_only: of LM runs)
    column: str | None = None  # dtype in the report's frame: "int", "float", "bool" or "str"
    text_only: bool = False  # written for language models only
    from_config: bool = False  # a RunConfig field (every one is in the record; these the report shows)


_f = ResultField


# In the report's column order; the fields without a column follow.
RESULT_FIELDS: tuple[ResultField, ...] = (
    _f("task", str, "image | text", column="str"),
    _f("dataset", str, "RunConfig.dataset", contract=True, column="str", from_config=True),
    _f("model", str, "RunConfig.model", contract=True, column="str", from_config=True),
    _f("precision", str, "canonical resolution label (RunConfig.precision)", contract=True,
       column="str", from_config=True),
    _f("levels", int, "number of weight values N; null for fp32", contract=True, column="int"),
    _f("bits", float, "log2 N; 32 for fp32", contract=True, column="float"),
    _f("zero", bool, "the N-level grid holds 0 (N odd); false for fp32 and bnn (Resolution.zero)",
       contract=True, column="bool"),
    _f("augment", str, "RunConfig.augment", contract=True, column="str", from_config=True),
    _f("epochs", int, "RunConfig.epochs (the budget; epochs_run says how many ran)", contract=True,
       column="int", from_config=True),
    _f("seed", int, "RunConfig.seed", contract=True, column="int", from_config=True),
    _f("lr", float, "RunConfig.lr (peak learning rate)", contract=True, column="float",
       from_config=True),
    _f("width", float, "RunConfig.width", contract=True, column="float", from_config=True),
    _f("scale_rule", str, "RunConfig.scale_rule", column="str", from_config=True),
    # float columns: means over seeds
    _f("params", int, "trainable parameters", contract=True, column="float"),
    _f("params_quantized", int, "parameters stored below 32 bits", contract=True, column="float"),
    _f("train_loss", float, "last epoch's mean training loss", contract=True, column="float"),
    _f("val_loss", float, "last epoch's validation loss", contract=True, column="float"),
    _f("val_acc", float, "last epoch's validation accuracy (token accuracy for LMs)",
       contract=True, column="float"),
    _f("best_val_acc", float, "best validation accuracy of any epoch", contract=True,
       column="float"),
    _f("test_acc", float, "test accuracy of the final model; null when diverged", contract=True,
       column="float"),
    _f("val_ppl", float, "last epoch's validation perplexity, per token", contract=True,
       column="float", text_only=True),
    _f("test_ppl", float, "test perplexity, per token", contract=True, column="float",
       text_only=True),
    _f("best_epoch", int, "epoch (1-based) of best_val_acc", contract=True, column="int"),
    _f("diverged", bool, "a NaN/inf loss or a loss above diverge_loss stopped the run",
       contract=True, column="bool"),
    _f("diverged_epoch", int, "epoch (1-based) it diverged in", contract=True, column="int"),
    _f("loss_spikes", int, "epochs whose val loss rose > 10% over the previous one",
       contract=True, column="float"),
    _f("max_val_acc_drop", float, "largest fall of val accuracy from one epoch to the next",
       contract=True, column="float"),
    _f("final_minus_best", float, "final minus best val accuracy (<= 0)", column="float"),
    _f("flip_rate", float, "last epoch's share of quantised weights whose level changed",
       contract=True, column="float"),
    _f("grad_norm", float, "last epoch's mean global gradient norm", column="float"),
    _f("oscillation", float, "last epoch's oscillation rate: bias-corrected EMA over steps of the "
       "share of quantised weights whose level moved against its previous move (Nagel et al. "
       "2022); null for fp32 and when track_oscillation is off", column="float"),
    _f("max_oscillation", float, "largest epoch-end oscillation rate", column="float"),
    _f("weight_bits", float, "average stored bits per parameter", contract=True, column="float"),
    _f("fp32_bytes", float, "every parameter at 32 bits", contract=True, column="float"),
    _f("quantized_bytes", float, "quantised parameters at log2 N bits, the rest at 32",
       contract=True, column="float"),
    _f("packed_bytes", int, "size of model.bsw", column="float"),
    _f("compression", float, "fp32_bytes / quantized_bytes", contract=True, column="float"),
    _f("fit_seconds", float, "wall time of the fit", contract=True, column="float"),
    _f("git_commit", str, "commit of the code that trained (BITSWEEP_GIT_COMMIT overrides)",
       column="str"),
    _f("version", str, "bitsweep version", column="str"),
    _f("torch_version", str, "torch version", column="str"),
    _f("device", str, "device it trained on (RunConfig.device resolved)", column="str"),
    # kept in the report as extra columns, as they come
    _f("train_acc", float, "last epoch's training accuracy"),
    _f("test_loss", float, "test loss; null when diverged"),
    _f("top_class_share", float, "share of the test inputs (tokens for LMs) given the class the "
       "model predicts most often; at or near 1 it predicts one class for everything "
       "(collapsed, whatever its accuracy); null when diverged"),
    _f("epochs_run", int, "epochs that ran (fewer than epochs when diverged)"),
    _f("flip_rate_mean", float, "mean flip rate over epochs"),
    _f("grad_norm_max", float, "largest per-epoch gradient norm"),
    _f("params_fp32", int, "parameters stored at 32 bits"),
    _f("layer_table", list, "the memory accounting per module holding parameters: name, type, "
       "params, resolution, bits, bytes (suite.quant.summary.layer_table); result.json only, "
       "not a results.csv column"),
    _f("packed_bits_per_weight", float, "model.bsw bits per quantised weight (32.0: none is)"),
    _f("entropy_bits_per_weight", float, "entropy of the level indices, bits per weight"),
    _f("packed_compression", float, "the state_dict's bytes at fp32 / model.bsw bytes"),
    _f("packed_ratio", float, "model.bsw bytes / model.safetensors bytes"),
    _f("dataset_checksum", str, "checksum of the data the run read"),
    _f("memory_format", str, "layout the convolutions ran in: channels_last or contiguous "
       "(RunConfig.memory_format resolved)"),
    _f("data_placement", str, "where the data sat: device (resident) or stream (host memory, each "
       "batch copied to the device); RunConfig.data_placement resolved"),
    _f("python_version", str, "Python version"),
    _f("host", str, "machine name"),
    _f("wandb_run_id", str, "the W&B run; null when W&B is disabled"),
    _f("wandb_group", str, "W&B group (RunConfig.group())"),
)
FIELDS_BY_NAME: dict[str, ResultField] = {f.name: f for f in RESULT_FIELDS}
CONTRACT_FIELDS: tuple[str, ...] = tuple(f.name for f in RESULT_FIELDS
                                         if f.contract and not f.text_only)
LM_FIELDS: tuple[str, ...] = tuple(f.name for f in RESULT_FIELDS if f.contract and f.text_only)
# What the trainer measures (everything but the RunConfig fields).
_MEASURED = tuple(f.name for f in RESULT_FIELDS if not f.from_config)


def run_result(config: Mapping[str, Any], measured: Mapping[str, Any], *, text: bool) -> dict[str, Any]:
    """The record of one run: every RunConfig field, then the measured fields in table order.

    ``measured`` must hold exactly the table's fields (the LM-only ones for text runs only): a
    metric added to the trainer but not to ``RESULT_FIELDS`` fails here, in the tests."""
    expected = {n for n in _MEASURED if text or not FIELDS_BY_NAME[n].text_only}
    unknown, missing = set(measured) - expected, expected - set(measured)
    if unknown or missing:
        raise KeyError(f"RunResult fields out of step with RESULT_FIELDS: not in the table "
                       f"{sorted(unknown)}, missing {sorted(missing)} (suite/run/result.py)")
    return {**config, **{n: measured[n] for n in _MEASURED if n in measured}}


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
    # an empty repository prints "HEAD" and fails
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def provenance(device: str) -> dict[str, Any]:
    import torch

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
    if hasattr(value, "item") and callable(value.item):  # a torch or numpy scalar
        return clean(value.item())
    return value


def write_result(result: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: clean(v) for k, v in result.items()}, indent=1, sort_keys=True))
    os.replace(tmp, path)  # a killed run never leaves half a result.json
