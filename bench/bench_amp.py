"""Mixed precision on CPU: a bf16-autocast training step against fp32, per model family.

Part ``amp``: the default study's models (sweeps/default.yaml: fc, cnn, vit on digits, the
character LM on stdlib-text, subset 1024, 64 tokens; batch 128, Adam) at ``--precision`` (2.32
bits: the quantiser runs in fp32 either way, so this is what amp can buy a quantised run). A
step is forward, loss, backward and Adam, as ``RunConfig.amp=bf16`` runs it (torch.autocast
around the forward and the loss). fp32 and bf16 each have their own copy of the model and
optimiser; a pair is one block of ``--steps`` steps of each, back to back (its order
alternating); the figure is the median over ``--pairs`` pairs of the ratio bf16 / fp32 of the
blocks' times (thread CPU time with one torch thread: the step's cost without what other
processes took; wall time beside it).

Part ``layout``: the small CNN's step with ``channels_last`` weights and inputs against the
default layout, on digits (8 x 8 x 1) and on 32 x 32 x 3 images, same pairing.

bf16 is fast on CPUs with native bf16 arithmetic (AVX512-BF16, AMX); elsewhere PyTorch emulates
it: the header line says which flags this CPU has.

    python bench/bench_amp.py [--part amp|layout|all] [--pairs 7] [--steps 10] [--threads 1]
        [--precision 2.32] [--models fc cnn vit lm]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

STUDY_FIXED = {"dataset": "digits", "batch_size": 128, "lr": 0.002}
STUDY_MODELS = {
    "fc": {"model": "fc"},
    "cnn": {"model": "cnn"},
    "vit": {"model": "vit"},
    "lm": {"model": "lm", "dataset": "stdlib-text", "subset": 1024, "block_size": 64, "lr": 0.003},
}


def cpu_flags() -> str:
    """This CPU's native bf16 flags, as /proc/cpuinfo lists them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    found = [f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f in flags]
    return ", ".join(found) or "none of avx512f, avx512_bf16, amx_bf16"


class Stepper:
    """One model and its Adam, stepped on one batch under an optional autocast dtype."""

    def __init__(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                 dtype: torch.dtype | None, lr: float) -> None:
        self.model, self.batch, self.dtype = model.train(), batch, dtype
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step(self) -> float:
        x, y = self.batch
        with torch.autocast("cpu", dtype=self.dtype) if self.dtype else contextlib.nullcontext():
            out = self.model(x)
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def block(self, steps: int) -> tuple[float, float]:
        """Thread CPU and wall seconds per step over ``steps`` steps."""
        start, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(steps):
            self.step()
        return (time.thread_time() - start_cpu) / steps, (time.perf_counter() - start) / steps


def paired_ratio(base: Stepper, other: Stepper, pairs: int, steps: int) -> dict[str, Any]:
    """Median over back-to-back pairs of other / base (thread CPU and wall), after a warm-up."""
    for stepper in (base, other):  # allocator, kernels, Adam's lazy state
        stepper.block(2)
    cpu, wall, ms = [], [], {"base": [], "other": []}
    for i in range(pairs):
        order = (("base", base), ("other", other))[:: 1 if i % 2 == 0 else -1]
        got = {name: stepper.block(steps) for name, stepper in order}
        cpu.append(got["other"][0] / got["base"][0])
        wall.append(got["other"][1] / got["base"][1])
        for name in ms:
            ms[name].append(1e3 * got[name][0])
    return {"ratio": statistics.median(cpu), "wall_ratio": statistics.median(wall),
            "base_ms": statistics.median(ms["base"]), "other_ms": statistics.median(ms["other"]),
            "loss": (base.step(), other.step())}


def study_model(name: str, precision: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], float]:
    """The default study's model ``name`` at ``precision``, and one training batch of its data."""
    from suite.models import model_from_spec
    from suite.run.config import RunConfig
    from suite.run.train import dataset_for, spec_for

    config = RunConfig(**{**STUDY_FIXED, **STUDY_MODELS[name], "precision": precision})
    data = dataset_for(config)
    torch.manual_seed(0)
    model = model_from_spec(spec_for(config, data))
    n = config.batch_size
    return model, (data.train_x[:n].contiguous(), data.train_y[:n].contiguous()), config.lr


def part_amp(args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    for name in args.models:
        model, batch, lr = study_model(name, args.precision)
        fp32 = Stepper(model, batch, None, lr)
        bf16 = Stepper(copy.deepcopy(model), batch, torch.bfloat16, lr)
        rows[name] = paired_ratio(fp32, bf16, args.pairs, args.steps)
    _print_pairs(f"amp: bf16 autocast / fp32, training step, {args.precision} bits, batch 128",
                 ("family", "fp32 ms/step", "bf16 ms/step", "bf16 / fp32 (thread CPU)"), rows)
    return rows


def _print_pairs(title: str, head: tuple[str, str, str, str], rows: dict[str, Any]) -> None:
    """A markdown table of paired_ratio results, one row per key."""
    print(f"\n## {title}")
    print(f"| {' | '.join(head)} | (wall) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['base_ms']:.2f} | {r['other_ms']:.2f} | {r['ratio']:.3f} | "
              f"{r['wall_ratio']:.3f} |")


def _cnn_on(shape: tuple[int, int, int], precision: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    from suite.models import build_model
    from suite.quant import QuantConfig

    torch.manual_seed(0)
    model = build_model("cnn", qconfig=QuantConfig(resolution=precision), input_shape=shape,
                        num_classes=10)
    gen = torch.Generator().manual_seed(0)
    return model, (torch.randn(128, *shape, generator=gen), torch.randint(0, 10, (128,), generator=gen))


def part_layout(args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    for label, shape in (("digits 8x8x1", (1, 8, 8)), ("32x32x3", (3, 32, 32))):
        model, (x, y) = _cnn_on(shape, args.precision)
        last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        base = Stepper(model, (x, y), None, 1e-3)
        other = Stepper(last, (x.contiguous(memory_format=torch.channels_last), y), None, 1e-3)
        rows[label] = paired_ratio(base, other, args.pairs, args.steps)
    _print_pairs(f"layout: channels_last / default, small CNN training step, {args.precision} bits, "
                 "batch 128", ("input", "default ms/step", "channels_last ms/step",
                               "ratio (thread CPU)"), rows)
    return rows


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {"amp": part_amp,
                                                                      "layout": part_layout}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="2.32")
    parser.add_argument("--models", nargs="*", default=list(STUDY_MODELS), choices=tuple(STUDY_MODELS))
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("$ python bench/bench_amp.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU bf16 flags: {cpu_flags()}")
    results = {name: fn(args) for name, fn in PARTS.items() if args.part in (name, "all")}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
