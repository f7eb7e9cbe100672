"""Sweep driver cost: per-trial overhead, and throughput of 2 workers vs 1 on this machine.

1. Overhead: a study of short FC trials run in-process (Lightning already imported, so the one-off
   import is not charged to the trials). Overhead per trial = (sweep wall time - sum of fit times)
   / trials: everything that is not ``trainer.fit`` — the queue, storage writes, data and model
   set-up, the test pass, saving and packing. Measured with W&B disabled (the driver's own cost) and
   offline (what a user pays by default; W&B's init and finish dominate it).
2. Scaling: a CNN study with --workers 1 and --workers 2, alternating, from a fresh storage each
   time: wall time of the whole command (spawned workers' imports included), and steady-state
   throughput (trials per minute between the first trial's start and the last one's end).

    python bench/bench_sweep.py [--trials 20] [--epochs 12] [--reps 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _spec(path: Path, study: str, model: str, epochs: int, trials: int, wandb: str) -> Path:
    precisions = ["fp32", 1, 1.58, 2, 2.32, 3, 3.17, 4, 4.09, "bnn"]
    seeds = list(range(max(1, -(-trials // len(precisions)))))
    raw = {"study": study,
           "fixed": {"dataset": "digits", "epochs": epochs, "wandb_mode": wandb, "model": model},
           "grid": [{"precision": precisions, "seed": seeds}]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def overhead(tmp: Path, trials: int, wandb: str) -> dict[str, float]:
    import optuna

    from suite.sweep import run_sweep
    from suite.sweep.spec import load_spec
    from suite.sweep.storage import open_storage

    spec = load_spec(_spec(tmp / f"over-{wandb}.yaml", f"over-{wandb}", "fc", 3, trials, wandb))
    runs = tmp / f"runs-over-{wandb}"
    start = time.perf_counter()
    run_sweep(spec, workers=1, runs_root=runs)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=spec.study,
                              storage=open_storage(str(runs / spec.study / "optuna.journal")))
    fits = [t.user_attrs["result"]["fit_seconds"] for t in study.trials]
    n = len(fits)
    return {"trials": n, "wall_s": wall, "fit_s": sum(fits),
            "overhead_per_trial_s": (wall - sum(fits)) / n}


def scaling_run(tmp: Path, spec: Path, workers: int, tag: str) -> tuple[float, float]:
    """(wall seconds of the whole command, steady-state trials per minute from the trials' own
    start/end stamps: first start to last end, so process start-up is left out)."""
    import optuna

    from suite.sweep.storage import open_storage

    runs = tmp / f"runs-{tag}"
    shutil.rmtree(runs, ignore_errors=True)
    env = {**os.environ, "CI": "true", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "suite", "sweep", str(spec), "--runs", str(runs),
                    "--workers", str(workers)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name="scale", storage=open_storage(
        str(runs / "scale" / "optuna.journal"))).trials
    span = (max(t.datetime_complete for t in trials)
            - min(t.datetime_start for t in trials)).total_seconds()
    return wall, 60 * len(trials) / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--reps", type=int, default=1, help="alternating 1-/2-worker repetitions")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of each scaling trial")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    import lightning  # noqa: F401 - imported once up front: the overhead is per trial

    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    out: dict[str, object] = {"cpus": os.cpu_count()}
    for mode in ("disabled", "offline"):
        out[f"overhead_wandb_{mode}"] = overhead(tmp, args.trials, mode)
        print(json.dumps({mode: out[f"overhead_wandb_{mode}"]}), flush=True)
    spec = _spec(tmp / "scale.yaml", "scale", "cnn", args.epochs, args.trials, "disabled")
    one, two = [], []
    for rep in range(args.reps):
        one.append(scaling_run(tmp, spec, 1, f"w1-{rep}"))
        two.append(scaling_run(tmp, spec, 2, f"w2-{rep}"))
        print(json.dumps({"rep": rep, "workers1": one[-1], "workers2": two[-1]}), flush=True)
    w1, w2 = min(w for w, _ in one), min(w for w, _ in two)
    t1, t2 = max(t for _, t in one), max(t for _, t in two)
    out["scaling"] = {"trials": args.trials, "cnn_epochs": args.epochs,
                      "workers1_wall_s": w1, "workers2_wall_s": w2, "wall_speedup": w1 / w2,
                      "workers1_trials_per_min": t1, "workers2_trials_per_min": t2,
                      "throughput_speedup": t2 / t1}
    print(json.dumps(out, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
