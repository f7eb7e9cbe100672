"""The report reads results only: importing it (and the light modules it shares with the sweep)
must not import torch or Lightning, which cost seconds and are not needed to build a report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "lightning", "pytorch_lightning", "torchmetrics")


@pytest.mark.parametrize("module", ["suite.report", "suite.report.cli", "suite.quant.resolution",
                                    "suite.run.result", "suite.sweep.slots", "suite.sweep.storage",
                                    "suite.cli"])
def test_import_pulls_in_no_torch_or_lightning(module):
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True)
    loaded = set(json.loads(out.stdout))
    assert module.split(".")[0] in loaded  # the probe did import something
    assert sorted(loaded.intersection(HEAVY)) == []


def test_reading_every_sweep_file_and_its_run_configs_pulls_in_no_torch():
    """A sweep's parent process and `bitsweep report sweeps/x.yaml` validate every cell's
    RunConfig; they train nothing, so they must not pay for torch (seconds and ~300 MB)."""
    code = ("import sys, json, glob\n"
            "from suite.sweep.spec import load_spec\n"
            "cells = sum(len(load_spec(p).cells) for p in sorted(glob.glob('sweeps/*.yaml')))\n"
            "print(json.dumps([cells, sorted({m.split('.')[0] for m in sys.modules})]))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True, cwd=root)
    cells, loaded = json.loads(out.stdout)
    assert cells > 1000  # every shipped study's cells were built and validated
    assert sorted(set(loaded).intersection(HEAVY)) == []


def test_resolution_labels_in_the_report_are_suite_quants():
    from suite.quant.resolution import parse_resolution
    from suite.report.frame import bit_budget, grid_kind, normalize_precision, precision_bits

    for label in ("fp32", "bnn", "1", "1.58", "2", "2.32", "3", "3.17", "4", "4.09", "N=7"):
        res = parse_resolution(label)
        assert normalize_precision(label) == res.label
        assert precision_bits(label) == res.bits
        assert grid_kind(label) == res.grid and bit_budget(label) == res.bit_budget
    assert normalize_precision("4.08") == "4.09" and normalize_precision("N=3") == "1.58"
    assert normalize_precision("weird") == "weird"  # a foreign label is kept, not an error
