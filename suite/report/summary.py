"""The opening of report.md in plain words: what was run, which accuracy the numbers are, each
claim's verdict in one line, and what a reader should know before trusting a number (collapsed
or diverged runs, fragile verdicts, a tuned study reduced to its best trials).

A run has *collapsed* when it gives one class to (nearly) every test input: its accuracy is the
share of that class, a number that looks like a result but is none. Runs record that share
(RunResult.top_class_share); runs from before the record cannot tell, and for them a setting
whose seeds all give the very same validation and test accuracy is named as possibly collapsed
(seeds that train different weights agree to the last example on two held-out sets when they
all predict the same class).
"""

from __future__ import annotations

import pandas as pd

from suite.report.claims import FRAGILE_BELOW, ClaimResult, verdict_lines
from suite.report.claims.text import ACC_WORDS
from suite.report.frame import StudyFrames, order_precisions
from suite.report.stats import ReportData

COLLAPSE_SHARE = 0.99  # top_class_share at or above this: the run predicts one class


def collapsed(results: pd.DataFrame) -> pd.Series | None:
    """results.csv's ``collapsed`` (boolean, NA where not recorded), or None when no run of the
    study recorded top_class_share (a study from before the record keeps its columns)."""
    if "top_class_share" not in results:
        return None
    share = pd.to_numeric(results["top_class_share"], errors="coerce")
    if share.isna().all():
        return None
    return pd.array([pd.NA if pd.isna(s) else bool(s >= COLLAPSE_SHARE) for s in share],
                    dtype="boolean")


def _config_text(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k} {_show(row[k])}" for k in keys if pd.notna(row[k]))


def _show(v: object) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def collapse_flags(data: ReportData) -> list[str]:
    """One line per setting (seeds together) whose runs collapsed, or possibly did."""
    runs = data.runs
    if runs.empty:
        return []
    keys = [*data.axes, "precision"]
    shown = [k for k in keys if k in ("model", "precision")
             or runs[k].nunique(dropna=False) > 1]
    lines = []
    flag = collapsed(runs)
    if flag is not None:
        hit = runs[pd.Series(flag, index=runs.index).fillna(False).astype(bool)]
        for _, g in hit.groupby(keys, dropna=False, sort=False):
            lines.append(f"collapsed: {_config_text(g.iloc[0], shown)}: {len(g)} run(s) give one "
                         f"class to ≥ {COLLAPSE_SHARE:.0%} of the test set (top_class_share "
                         f"{g['top_class_share'].min():.3f}); its accuracy is that class's share")
        runs = runs[runs["top_class_share"].isna()] if "top_class_share" in runs else runs
    lines += _possible_collapses(runs, keys, shown)
    return lines


def _possible_collapses(runs: pd.DataFrame, keys: list[str], shown: list[str]) -> list[str]:
    if runs.empty or not {"val_acc", "test_acc"} <= set(runs):
        return []
    lines = []
    for _, g in runs.groupby(keys, dropna=False, sort=False):
        if (len(g) >= 2 and g["val_acc"].notna().all() and g["test_acc"].notna().all()
                and g["val_acc"].nunique() == 1 and g["test_acc"].nunique() == 1):
            row = g.iloc[0]
            lines.append(f"possibly collapsed: {_config_text(row, shown)}: all {len(g)} seeds "
                         f"give the same val_acc {row['val_acc']:.4f} and test_acc "
                         f"{row['test_acc']:.4f} (std 0), as runs that predict one class for "
                         "every input do (these runs predate top_class_share, which would tell)")
    return lines


def _number_first(text: str) -> tuple[int, float, str]:
    """Sort key: numbers by value, then words alphabetically."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _values(runs: pd.DataFrame, col: str, limit: int = 12) -> str:
    if col not in runs:
        return "not recorded"
    vals = order_precisions(runs[col]) if col == "precision" else sorted(
        {_show(v) for v in runs[col].dropna()}, key=_number_first)
    if not vals:
        return "not recorded"
    text = ", ".join(str(v) for v in vals[:limit])
    return text + (f", … ({len(vals)} in all)" if len(vals) > limit else "")


def summary_markdown(frames: StudyFrames, data: ReportData,
                     claims: list[ClaimResult]) -> list[str]:
    """The lines of report.md's Summary section."""
    res, runs = frames.results, data.runs
    counts = res["status"].value_counts().to_dict() if len(res) else {}
    status = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    # what the sweep's progress lines and Optuna show: the spec's objective (val_acc by default)
    objective = str(((frames.spec or {}).get("objective") or {}).get("metric", "val_acc"))
    acc = data.acc_col
    other = [a for a in data.axes if a not in ("task", "dataset", "model")
             and a in runs and runs[a].nunique(dropna=False) > 1]
    lines = [
        f"- **Run**: {len(res)} trials ({status or 'none'}): models {_values(runs, 'model')} on "
        f"{_values(runs, 'dataset')}; resolutions {_values(runs, 'precision')}; seeds "
        f"{_values(runs, 'seed')}"
        + (f"; also varied: {', '.join(f'{a} ({_values(runs, a)})' for a in other)}"
           if other else "") + ".",
    ]
    if data.tuning is not None:
        lines.append(f"- **Tuned**: {data.tuning.describe()}.")
    if acc is None:
        lines.append("- **Numbers**: no completed run reports an accuracy.")
    else:
        same = "the same metric" if acc == objective else f"`{objective}`, not `{acc}`"
        lines.append(
            f"- **Numbers**: accuracies are {ACC_WORDS.get(acc, f'`{acc}`')}, in percent points, "
            f"mean over seeds unless a table says otherwise. The sweep's progress lines and "
            f"Optuna (optuna-dashboard) show the objective: {same}.")
    lines += ["- **Verdicts** (rules: *How the verdicts are decided*; every row: *Claims*):"]
    lines += [f"  - {line}" for line in verdict_lines(claims)]
    flags = _flags(data, claims)
    lines += ["- **Flagged**:" if flags else "- **Flagged**: nothing."]
    lines += [f"  - {f}" for f in flags]
    return lines


def _flags(data: ReportData, claims: list[ClaimResult]) -> list[str]:
    runs = data.runs
    out = collapse_flags(data)
    if len(runs):
        div = runs["diverged"].fillna(False).astype(bool)
        if div.any():
            out.append(f"diverged: {int(div.sum())} of {len(runs)} completed runs (no accuracy; "
                       "counted as unstable in C3/C4 and the stability figure)")
    fragile = [c.id for c in claims if c.fragile]
    if fragile:
        out.append(f"fragile verdicts (the same verdict in under {FRAGILE_BELOW:.0%} of "
                   f"resamples): {', '.join(fragile)}")
    return out
