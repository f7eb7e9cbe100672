"""Reporting layer: sweep results -> tidy frames -> paper-ready figures, tables and claim checks.

    frames = load_study("x", "sqlite:///runs/x/optuna.db")   # or load_run_dirs([...])
    build_report(frames, Path("reports/x"), study="x", command="bitsweep report sweeps/x.yaml")

Modules: frame (tidy frames and loaders), stats (shared statistics), style (paper style and the
fixed colour per resolution), figures, tables, claims, build (writes reports/<study>/), synthetic
(plausible fake studies for tests and the benchmark).
"""

from suite.report.build import build_report
from suite.report.frame import (
    CURVE_COLUMNS,
    RESULT_COLUMNS,
    StudyFrames,
    load_run_dirs,
    load_study,
    order_precisions,
)

__all__ = [
    "CURVE_COLUMNS",
    "RESULT_COLUMNS",
    "StudyFrames",
    "build_report",
    "load_run_dirs",
    "load_study",
    "order_precisions",
]
