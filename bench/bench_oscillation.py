"""What tracking weight oscillation costs a training step (RunConfig.track_oscillation).

The default study's models on digits at 2.32 bits (fc, cnn, vit; 24 epochs, batch 128; the LM on
stdlib-text at 6 epochs with ``--models lm``), each trained by ``train()`` with tracking off and
on, back to back, ``--pairs`` times (the pair's order alternating); the figure is the median of
the pairs' ratios of ``fit_seconds`` (on/off), and the extra milliseconds per training step. One
torch thread, W&B disabled. Goal: under 1.05, or tracking stays an option that the stability
study switches on (it is an option either way: off by default).

    python bench/bench_oscillation.py [--pairs 3] [--models fc cnn vit] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

MODELS = {
    "fc": {"model": "fc", "dataset": "digits", "epochs": 24},
    "cnn": {"model": "cnn", "dataset": "digits", "epochs": 24},
    "vit": {"model": "vit", "dataset": "digits", "epochs": 24},
    "lm": {"model": "lm", "dataset": "stdlib-text", "subset": 1024, "block_size": 64,
           "lr": 0.003, "epochs": 6},
}
FIXED = {"precision": "2.32", "batch_size": 128, "lr": 0.002, "schedule": "cosine",
         "warmup_epochs": 1, "wandb_mode": "disabled"}


def fit(name: str, track: bool, out: Path, threads: int) -> tuple[float, int]:
    from suite.run.config import RunConfig
    from suite.run.train import train

    config = RunConfig(**{**FIXED, **MODELS[name], "threads": threads, "track_oscillation": track})
    result = train(config, out, progress=False)
    steps = (out / "curves.csv").read_text().count("\n") - 1  # epochs; steps below
    return result["fit_seconds"], steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["fc", "cnn", "vit"], choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from suite.run.config import RunConfig
    from suite.run.train import dataset_for

    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            config = RunConfig(**{**FIXED, **MODELS[name]})
            steps_per_epoch = -(-len(dataset_for(config).train_y) // config.batch_size)
            fit(name, True, Path(tmp) / f"warm-{name}", args.threads)  # caches, lazy kernels
            times: dict[bool, list[float]] = {False: [], True: []}
            for rep in range(args.pairs):
                for track in (False, True)[:: 1 if rep % 2 == 0 else -1]:
                    seconds, epochs = fit(name, track, Path(tmp) / f"{name}-{rep}-{track}",
                                          args.threads)
                    times[track].append(seconds)
            ratio = statistics.median(on / off for off, on in zip(times[False], times[True]))
            steps = steps_per_epoch * epochs
            extra = statistics.median((on - off) / steps * 1e3
                                      for off, on in zip(times[False], times[True]))
            rows[name] = {"off_s": statistics.median(times[False]),
                          "on_s": statistics.median(times[True]), "ratio": ratio,
                          "extra_ms_per_step": extra, "steps": steps, "all": times}
    print(f"## oscillation tracking: {args.pairs} back-to-back pairs, {args.threads} thread(s)")
    print("| model (epochs) | steps | off | on | ratio on/off | extra per step |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} ({MODELS[name]['epochs']}) | {r['steps']} | {r['off_s']:.2f} s | "
              f"{r['on_s']:.2f} s | **{r['ratio']:.3f}** | {r['extra_ms_per_step']:.2f} ms |")
    print(json.dumps({k: {m: v for m, v in r.items() if m != "all"} for k, r in rows.items()}))
    return rows


if __name__ == "__main__":
    main()
