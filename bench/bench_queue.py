"""Queuing a large grid: the time a sweep command takes to put every cell of a fresh study in the
queue (issue 22: 10^4 cells took over 10 minutes on SQLite), on a journal file and on SQLite.

For each storage, on a fresh one: the study is created and every cell queued as the first
`bitsweep sweep` does (open_study, then sync_queue under the queue lock), then queued again as a
resumed command does (nothing left to add: the cost of reading the queue back). The sweep file's
validation (parse_spec, expanding and checking every cell) is timed apart, once. Each queue is
checked: one WAITING trial per cell, no slot twice.

    python bench/bench_queue.py [--cells 10000] [--storages journal sqlite]

The code measured is whatever `suite` imports: to time another commit's, put its tree first on
the path, e.g. `git archive 3b17ce0 suite | tar -x -C /tmp/before &&
PYTHONPATH=/tmp/before python bench/bench_queue.py`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path


def _raw(cells: int) -> dict:
    return {"study": "queue-bench",
            "fixed": {"dataset": "digits", "model": "fc", "epochs": 1, "wandb_mode": "disabled"},
            "grid": {"precision": ["fp32"], "seed": list(range(cells))}}


def _url(kind: str, root: Path) -> str:
    return str(root / "optuna.journal") if kind == "journal" else f"sqlite:///{root / 'optuna.db'}"


def queue_once(spec: object, url: str) -> tuple[float, float, int]:
    """(seconds to create the study and queue every cell, seconds to queue again, trials)."""
    from optuna.trial import TrialState

    from suite.sweep.driver import open_study  # where it is importable in every version
    from suite.sweep.queue import queue_lock, sync_queue

    start = time.perf_counter()
    study = open_study(spec, url)
    with queue_lock(url):
        first = sync_queue(study, spec, retry_crashed=True)
    queued = time.perf_counter() - start
    start = time.perf_counter()
    with queue_lock(url):
        again = sync_queue(study, spec, retry_crashed=True)
    requeued = time.perf_counter() - start
    trials = study.get_trials(deepcopy=False)
    slots = {t.user_attrs["slot"] for t in trials}
    assert first.enqueued == len(trials) == len(slots) == first.slots, (first, len(trials))
    assert again.enqueued == 0 and {t.state for t in trials} == {TrialState.WAITING}
    return queued, requeued, len(trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--storages", nargs="+", default=["journal", "sqlite"],
                        choices=["journal", "sqlite"])
    args = parser.parse_args()

    import suite
    from suite.sweep.spec import parse_spec

    start = time.perf_counter()
    spec = parse_spec(_raw(args.cells))
    parsed = time.perf_counter() - start
    rows = {"code": str(Path(suite.__file__).parent), "cells": args.cells,
            "python": platform.python_version(), "spec_parse_s": round(parsed, 2)}
    print(json.dumps(rows), flush=True)
    for kind in args.storages:
        with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
            queued, requeued, n = queue_once(spec, _url(kind, Path(tmp)))
        row = {"storage": kind, "trials": n, "queue_s": round(queued, 2),
               "requeue_s": round(requeued, 2)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
