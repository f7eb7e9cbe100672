"""Benchmark: build a full report from a synthetic 10,000-run study.

    python bench/bench_report.py [--runs 10000] [--out /tmp/bench_report]

Prints the command and the seconds of each stage; the goal is a build under 20 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suite.report import build_report  # noqa: E402
from suite.report.build import default_workers  # noqa: E402
from suite.report.frame import frames_from_records  # noqa: E402
from suite.report.synthetic import synthetic_records  # noqa: E402

GOAL_SECONDS = 20.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=None, help="figure processes")
    args = parser.parse_args(argv)
    command = "python bench/bench_report.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: {command.strip()}")

    t0 = time.perf_counter()
    # 4 models x 3 widths x 3 augmentations (images only) x 3 epoch budgets x 10 resolutions
    # x 11 seeds = 9,900 finished runs, plus 100 failed trials: 10,000.
    records = synthetic_records(
        models=("fc", "cnn", "vit", "lm"),
        seeds=tuple(range(11)),
        augments=("none", "standard", "strong"),
        epochs=(5, 10, 20),
        widths={
            "fc": (128, 256, 512),
            "cnn": (16, 32, 64),
            "vit": (32, 64, 128),
            "lm": (64, 128, 256),
        },
        failed=100,
    )[: args.runs]
    t1 = time.perf_counter()
    frames = frames_from_records(records, study_name="bench", source="synthetic benchmark")
    t2 = time.perf_counter()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_report_"))
    load_before = os.getloadavg()[0]
    cpu0 = _cpu_seconds()
    report = build_report(frames, out, study="bench", command=command, workers=args.workers)
    t3 = time.perf_counter()
    cpu = _cpu_seconds() - cpu0
    result = {
        "runs": len(frames.results),
        "curve_rows": len(frames.curves),
        "generate_s": round(t1 - t0, 2),
        "frames_s": round(t2 - t1, 2),
        "build_s": round(t3 - t2, 2),
        # CPU seconds of the build in this process and its figure workers: what the build
        # costs whatever else the machine runs (the wall time above depends on that).
        "build_cpu_s": round(cpu, 2),
        "load_avg_1min_before": round(load_before, 2),
        "figures": len(list((out / "figures").glob("*.png"))),
        "workers": args.workers if args.workers is not None else default_workers(),
        "goal_s": GOAL_SECONDS,
        "within_goal": (t3 - t2) < GOAL_SECONDS,
        "report": str(report),
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    return result


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # figure workers, once joined
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
