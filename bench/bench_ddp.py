"""Data-parallel overhead on CPU (RunConfig.devices): fit_seconds of one run on 2 gloo processes
vs 1 process, same global batch.

fc and cnn on digits at 2.32 bits (the default study's size: 24 epochs, batch 128, Adam, cosine
with one warm-up epoch), 1 torch thread per process, W&B disabled; ``--reps`` interleaved pairs,
median. On models this small the per-step collectives (gradient all-reduce, the global loss for
the divergence check) cost more than splitting the batch saves: devices > 1 is for models whose
step is long, on GPUs.

    python bench/bench_ddp.py [--reps 3] [--models fc cnn]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

BASE = {"dataset": "digits", "precision": "2.32", "epochs": 24, "batch_size": 128, "lr": 0.002,
        "schedule": "cosine", "warmup_epochs": 1, "device": "cpu", "threads": 1,
        "wandb_mode": "disabled"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["fc", "cnn"])
    args = parser.parse_args(argv)
    from suite.run.config import RunConfig
    from suite.run.train import train

    rows: dict[str, Any] = {}
    for model in args.models:
        fit: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.reps):
            for devices in (1, 2):  # interleaved: both see the same machine
                with tempfile.TemporaryDirectory() as tmp:
                    result = train(RunConfig(model=model, devices=devices, **BASE), tmp,
                                   progress=False)
                fit[devices].append(result["fit_seconds"])
        one, two = statistics.median(fit[1]), statistics.median(fit[2])
        rows[model] = {"devices_1_s": one, "devices_2_s": two, "ratio": two / one, "all": fit}
    print(f"## DDP on CPU: 2 gloo processes vs 1, {args.reps} interleaved pairs, median fit_seconds")
    print("| model | devices=1 | devices=2 | ratio |")
    print("|---|---|---|---|")
    for model, r in rows.items():
        print(f"| {model} | {r['devices_1_s']:.2f} s | {r['devices_2_s']:.2f} s | **{r['ratio']:.2f}x** |")
    return rows


if __name__ == "__main__":
    main()
