"""The GPU check of the paper-scale work: the tests that need a GPU, then mixed-precision timings.

1. ``tests``: every test gated on ``torch.cuda.is_available()`` (found in tests/ by reading their
   decorators, so a new GPU test is picked up without a marker), run by pytest. On a GPU each
   must pass; a skip there means the GPU was not seen and fails the check.
2. ``cifar_epoch``: ``train()`` of the small CNN (``cnn``, 2.32 bits) on CIFAR-10 (synthetic
   tensors of its shape and split sizes when the dataset is not on disk: the machine has no
   network), two epochs per amp mode; the figure is the second epoch's wall time (the first
   pays for kernel selection), and the run must end with finite losses.
3. ``paper1_cnn``: a training step (forward, backward, Adam) of ``cnn-paper1-3x3`` at bnn on
   256 x 256 x 3 images, 101 classes, batch 64 (paper 1's Food-101 set-up).
4. ``paper1_lm``: the same for ``lm-paper1-small`` at bnn, WordPiece vocabulary 30,522, 256
   tokens, batch 8.

Each figure is given per amp mode (off, bf16, fp16 on CUDA) as seconds and as a ratio to off
(fp32); the two CNN workloads also in channels_last at off and bf16, and the CIFAR epoch with its
data streamed from host memory (``data_placement: stream``) instead of resident.
Steps: median of ``--steps`` after ``--warmup``, the device synchronised around each.
``--quick`` shrinks every workload (CPU-sized; for checking that the script runs).

    python bench/gpu_check.py --out DIR [--device cuda|cpu] [--quick]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, no install needed

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TESTS_TIMEOUT_S = 240  # of the script's 8 minutes


# --- 1. the tests that need a GPU -----------------------------------------------------------

def _cuda_gated(decorators: list[ast.expr]) -> bool:
    return any("cuda.is_available" in ast.unparse(d) for d in decorators)


def gpu_test_ids(tests: Path = ROOT / "tests") -> list[str]:
    """pytest node ids of the test functions whose decorators ask for CUDA."""
    ids = []
    for path in sorted(tests.rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and _cuda_gated(node.decorator_list):
                ids.append(f"{path.relative_to(ROOT)}::{node.name}")
    return ids


def run_gpu_tests(out: Path) -> dict[str, Any]:
    ids = gpu_test_ids()
    report = out / "gpu_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={report}", *ids]
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TESTS_TIMEOUT_S)
        tail = (done.stdout + done.stderr)[-3000:]
    except subprocess.TimeoutExpired as err:
        tail = f"timed out after {TESTS_TIMEOUT_S} s\n{(err.stdout or b'')[-3000:]!r}"
    counts = _junit_counts(report)
    return {"ids": ids, "seconds": time.perf_counter() - started, **counts, "tail": tail}


def _junit_counts(report: Path) -> dict[str, int]:
    if not report.is_file():
        return {"tests": 0, "passed": 0, "failed": 0, "skipped": 0}
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return {"tests": tests, "passed": tests - skipped - failed, "failed": failed, "skipped": skipped}


# --- timing -----------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_modes(device: torch.device) -> list[str]:
    """The amp modes the device runs (fp16 needs CUDA's gradient scaler, as RunConfig says)."""
    return ["off", "bf16", "fp16"] if device.type == "cuda" else ["off", "bf16"]


def time_steps(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], amp: str,
               device: torch.device, warmup: int, steps: int) -> dict[str, Any]:
    """Median wall seconds of a training step under ``amp``; the last loss must be finite."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    dtype = AMP_DTYPES[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    x, y = batch
    times, loss = [], torch.tensor(math.nan)
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            out = model(x)
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "loss": float(loss.detach())}


def _build(name: str, input_shape: tuple[int, ...], classes: int, device: torch.device,
           **knobs: Any) -> torch.nn.Module:
    from suite.models import build_model
    from suite.quant import QuantConfig

    torch.manual_seed(0)
    model = build_model(name, qconfig=QuantConfig(resolution="bnn"), input_shape=input_shape,
                        num_classes=classes, **knobs)
    return model.to(device).train()


def paper1_cnn(device: torch.device, quick: bool, warmup: int, steps: int) -> dict[str, Any]:
    size, batch, knobs = (64, 8, {"width": 0.25}) if quick else (256, 64, {})
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen, device=device)
    y = torch.randint(0, 101, (batch,), generator=gen, device=device)
    rows = {}
    for amp in amp_modes(device):
        model = _build("cnn-paper1-3x3", (3, size, size), 101, device, **knobs)
        rows[amp] = time_steps(model, (x, y), amp, device, warmup, steps)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    for amp in ("off", "bf16"):
        model = _build("cnn-paper1-3x3", (3, size, size), 101, device, **knobs)
        model.to(memory_format=torch.channels_last)
        rows[f"{amp} channels_last"] = time_steps(model, (nhwc, y), amp, device, warmup, steps)
    return {"what": f"cnn-paper1-3x3 bnn step, {size} px, batch {batch}", "modes": rows}


def paper1_lm(device: torch.device, quick: bool, warmup: int, steps: int) -> dict[str, Any]:
    vocab, length, batch, knobs = ((1000, 64, 2, {"width": 0.125, "depth": 2}) if quick
                                   else (30_522, 256, 8, {}))
    gen = torch.Generator(device=device).manual_seed(0)
    tokens = torch.randint(0, vocab, (batch, length + 1), generator=gen, device=device)
    rows = {}
    for amp in amp_modes(device):
        model = _build("lm-paper1-small", (length,), vocab, device, **knobs)
        rows[amp] = time_steps(model, (tokens[:, :-1], tokens[:, 1:]), amp, device, warmup, steps)
    return {"what": f"lm-paper1-small bnn step, vocab {vocab}, {length} tokens, batch {batch}",
            "modes": rows}


# --- 2. a CIFAR-10 epoch through train() ------------------------------------------------------

def cifar_splits(quick: bool) -> tuple[Any, str]:
    """CIFAR-10 as on disk, else random tensors of its shape and split sizes (45,000 / 5,000 /
    10,000; a 20th of that with ``quick``), normalised as the real ones are."""
    from suite.data import DatasetError, load_dataset
    from suite.data.splits import DataSplits, tensors_checksum

    if not quick:
        try:
            return load_dataset("cifar10", download=False), "cifar10 from disk"
        except DatasetError:
            pass
    scale = 20 if quick else 1
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for split, n in (("train", 45_000 // scale), ("val", 5_000 // scale), ("test", 10_000 // scale)):
        tensors[f"{split}_x"] = torch.randn(n, 3, 32, 32, generator=gen)
        tensors[f"{split}_y"] = torch.randint(0, 10, (n,), generator=gen)
    splits = DataSplits("cifar10", "image", **tensors, num_classes=10, input_shape=(3, 32, 32),
                        image_kind="natural", checksum=tensors_checksum(tensors))
    return splits, f"synthetic, CIFAR-10 shape ({len(tensors['train_y'])} train images)"


class _EpochClock:
    """Wall time of each training epoch, the device synchronised at both ends."""

    def __init__(self, device: torch.device) -> None:
        import lightning as L

        clock = self
        self.seconds: list[float] = []

        class Callback(L.Callback):
            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                _sync(device)
                clock._start = time.perf_counter()

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                _sync(device)
                clock.seconds.append(time.perf_counter() - clock._start)

        self.callback = Callback()


def variants(device: torch.device) -> list[tuple[str, str, dict[str, str]]]:
    """(row label, amp, RunConfig knobs) of the CIFAR epoch: each amp mode in the plain layout,
    then channels_last at off and bf16 (suite/run/layout.py takes it on a GPU only once these
    rows show a gain), then the data streamed from host memory instead of resident."""
    rows = [(amp, amp, {"memory_format": "contiguous"}) for amp in amp_modes(device)]
    rows += [(f"{amp} channels_last", amp, {"memory_format": "channels_last"}) for amp in ("off", "bf16")]
    rows.append(("off streamed", "off", {"memory_format": "contiguous", "data_placement": "stream"}))
    return rows


def cifar_epoch(device: torch.device, quick: bool) -> dict[str, Any]:
    import suite.run.train as run_train
    from suite.run.config import RunConfig

    data, source = cifar_splits(quick)
    run_train.dataset_for = lambda config: data  # the data above, found or made, for every run
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, amp, knobs in variants(device):
            config = RunConfig(model="cnn", dataset="cifar10", precision="2.32", epochs=2, amp=amp,
                               device=str(device), wandb_mode="disabled", **knobs)
            clock = _EpochClock(device)
            result = run_train.train(config, Path(tmp) / label.replace(" ", "-"),
                                     callbacks=[clock.callback], progress=False)
            rows[label] = {"seconds": clock.seconds[-1], "loss": result["train_loss"],
                           "val_acc": result["val_acc"], "diverged": result["diverged"]}
    return {"what": f"train() of cnn at 2.32 bits, 2nd epoch, batch 128, data: {source}",
            "modes": rows}


# --- report -----------------------------------------------------------------------------------

def with_ratios(part: dict[str, Any]) -> dict[str, Any]:
    base = part["modes"]["off"]["seconds"]
    for row in part["modes"].values():
        row["ratio"] = row["seconds"] / base
    return part


def problems(figures: dict[str, Any], device: torch.device) -> list[str]:
    """What fails the check: a failed GPU test, a GPU test skipped on a GPU, a non-finite loss."""
    found = []
    tests = figures["tests"]
    if tests["failed"] or not tests["tests"]:
        found.append(f"GPU tests: {tests['failed']} failed of {tests['tests']}")
    if device.type == "cuda" and tests["skipped"]:
        found.append(f"GPU tests: {tests['skipped']} skipped on a GPU")
    for name in ("cifar_epoch", "paper1_cnn", "paper1_lm"):
        for amp, row in figures[name]["modes"].items():
            if not math.isfinite(row["loss"]) or row.get("diverged"):
                found.append(f"{name} amp={amp}: loss {row['loss']}")
    return found


def markdown(figures: dict[str, Any]) -> str:
    env, tests = figures["environment"], figures["tests"]
    lines = [f"# GPU check ({env['device_name']}, torch {env['torch']}, "
             f"{'quick' if env['quick'] else 'full'})", "",
             f"GPU tests: {tests['passed']} passed, {tests['skipped']} skipped, {tests['failed']} "
             f"failed of {tests['tests']} ({tests['seconds']:.0f} s)", "",
             "| workload | amp | seconds | x fp32 | final loss |", "|---|---|---|---|---|"]
    for name in ("cifar_epoch", "paper1_cnn", "paper1_lm"):
        for amp, row in figures[name]["modes"].items():
            lines.append(f"| {figures[name]['what']} | {amp} | {row['seconds']:.4f} | "
                         f"{row['ratio']:.3f} | {row['loss']:.4g} |")
    lines += ["", "Problems: " + ("; ".join(figures["problems"]) or "none")]
    return "\n".join(lines) + "\n"


def environment(device: torch.device, quick: bool) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "quick": quick,
            "threads": torch.get_num_threads()}


def _timed(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    part = fn()
    print(f"[gpu_check] {label}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return part


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default=os.environ.get("BITSWEEP_GPU_CHECK_DEVICE", "cuda"))
    parser.add_argument("--quick", action="store_true", help="CPU-sized workloads")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20; quick 2)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; BITSWEEP_GPU_CHECK_DEVICE=cpu runs the CPU path",
              file=sys.stderr)
        return 2
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    steps = args.steps if args.steps is not None else (2 if args.quick else 20)
    args.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"environment": environment(device, args.quick)}
    figures["tests"] = _timed("tests", lambda: run_gpu_tests(args.out))
    figures["cifar_epoch"] = with_ratios(_timed("cifar_epoch", lambda: cifar_epoch(device, args.quick)))
    figures["paper1_cnn"] = with_ratios(_timed(
        "paper1_cnn", lambda: paper1_cnn(device, args.quick, warmup, steps)))
    figures["paper1_lm"] = with_ratios(_timed(
        "paper1_lm", lambda: paper1_lm(device, args.quick, warmup, steps)))
    figures["problems"] = problems(figures, device)
    text = markdown(figures)
    (args.out / "gpu_check.json").write_text(json.dumps(figures, indent=1))
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
