"""What ``suite.quant.quantize_`` costs on a model of 10,000 modules (goal: under 1 s).

The model is built to the module count (``--modules``, the root included): blocks of
Linear -> LayerNorm -> ReLU -> Conv1d-free Identity, 64 features wide, so the time is the
per-module work of quantize_ (the walk, the class change, the per-layer step of a learned rule,
the summary's per-layer table and fp32 list), not arithmetic on large tensors. Cases: the
default (gauss, every layer alike), ``lsq`` (a step per layer computed from its weights), and
per-layer rules with ``keep_fp32=ends`` (every layer name matched against the rules). Each case
runs ``--repeats`` times on a fresh model; the median is reported, and the model build beside it
for scale. One torch thread.

    python bench/bench_quantize.py [--modules 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from torch import nn

CASES: dict[str, dict[str, Any]] = {
    "gauss": {},
    "lsq": {"scale_rule": "lsq"},
    "rules+ends": {"layers": ["re:blocks\\.1[0-9]*\\..*=4", "*.0=fp32"], "keep_fp32": "ends"},
}


def build(modules: int, width: int = 64) -> nn.Module:
    """A model with exactly ``modules`` modules (named_modules, the root included)."""
    blocks = []
    left = modules - 2  # the root and the blocks' Sequential
    while left >= 5:  # a block: its Sequential + 4 layers
        blocks.append(nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU(),
                                    nn.Identity()))
        left -= 5
    model = nn.Module()
    model.blocks = nn.Sequential(*blocks, *(nn.Identity() for _ in range(left)))
    return model


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from suite.quant import quantize_
    from suite.quant.scale import gaussian_step

    gaussian_step(5), gaussian_step(16)  # cached per N once per process: not quantize_'s cost
    out: dict[str, Any] = {"modules": args.modules}
    t0 = time.perf_counter()
    probe = build(args.modules)
    out["build_s"] = round(time.perf_counter() - t0, 3)
    out["count"] = sum(1 for _ in probe.named_modules())
    out["weight_layers"] = sum(isinstance(m, nn.Linear) for m in probe.modules())
    for name, kwargs in CASES.items():
        times = []
        for _ in range(args.repeats):
            model = build(args.modules)
            t0 = time.perf_counter()
            summary = quantize_(model, "2.32", **kwargs)
            times.append(time.perf_counter() - t0)
        out[name] = {"median_s": round(statistics.median(times), 3),
                     "min_s": round(min(times), 3), "layers_in_table": len(summary.layers)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
