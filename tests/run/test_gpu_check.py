"""bench/gpu_check.sh: it finds the GPU-gated tests by themselves, and its CPU path runs end to end
(the GPU path is the same code with device cuda and fp16 added; it runs where there is a GPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_finds_the_tests_that_skip_without_cuda() -> None:
    ids = _gpu_check().gpu_test_ids()
    assert {"tests/data/test_augment.py::test_runs_on_the_batch_device",
            "tests/data/test_loader.py::test_cuda_batches_and_augmentation_stay_on_device",
            "tests/quant/test_autocast.py::test_quantized_weight_is_exact_under_cuda_autocast",
            } <= set(ids)
    assert not any("test_quantized_weight_is_exact_under_cpu" in i for i in ids)


@pytest.mark.slow
def test_the_cpu_path_runs_and_writes_its_figures(tmp_path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "BITSWEEP_GPU_CHECK_DEVICE": "cpu",
           "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--quick", "--warmup", "0",
                           "--steps", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["problems"] == []
    assert figures["tests"]["tests"] >= 3 and figures["tests"]["failed"] == 0
    layouts = {"off channels_last", "bf16 channels_last"}
    expected = {"cifar_epoch": {"off", "bf16", *layouts, "off streamed"},  # fp16 needs CUDA
                "paper1_cnn": {"off", "bf16", *layouts}, "paper1_lm": {"off", "bf16"}}
    for part, rows in expected.items():
        modes = figures[part]["modes"]
        assert set(modes) == rows, part
        assert modes["off"]["ratio"] == 1.0 and all(m["seconds"] > 0 for m in modes.values())
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| workload | amp | seconds | x fp32 | final loss |" in markdown
    assert markdown in done.stdout
