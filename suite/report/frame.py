"""Tidy frames of a sweep: one row per run (``results``) and one row per run and epoch (``curves``).

Sources: an Optuna study (any storage: RDB URL such as ``sqlite:///x.db`` or
``postgresql+psycopg2://...``, a JournalStorage log file path, or a storage object) whose trials
carry the user_attrs ``result`` (RunResult), ``curves`` (per-epoch dicts), ``config`` (RunConfig)
and ``cell``; or run directories holding ``result.json`` and ``curves.csv``.

``results`` columns (``RESULT_COLUMNS``; always present, NaN/NA where unknown; any further config or
result field follows them, in name order):

    run_id            str   "trial-<number>" for Optuna trials, the directory name for run dirs
    trial             Int64 Optuna trial number (NA for run dirs)
    state             str   Optuna state: COMPLETE, FAIL, PRUNED, RUNNING, WAITING
    status            str   ok | diverged | failed | retried | pruned | running | waiting
                            (retried: a failed attempt whose slot a later trial completed)
    error             str   failure message of a FAIL trial
    cell              str   grid-cell key given by the sweep driver
    (after the contract columns, when the sweep driver records them: slot, the cell and repeat
    a trial ran; attempt, its try at that slot; failure, crash or lost)
    task              str   image | text
    dataset, model    str
    precision         str   resolution label: fp32, bnn, 1, 1.58, 2, 2.32, 3, 3.17, 4, 4.09, N=<n>
    levels            Int64 number of weight values N (2 for bnn, NA for fp32)
    bits              float log2 N; 32 for fp32, 1 for bnn
    zero              bool  the level grid holds zero (N odd); False for fp32 and bnn
    grid              str   fp32 | bnn | zero | no zero  (how the resolution is built)
    k                 Int64 bit budget of a level grid: N = 2^k (no zero) or 2^k + 1 (zero)
    augment           str   none | standard | strong
    epochs, seed      Int64
    lr                float
    width             float model width knob (NaN when the model has none)
    scale_rule        str
    (keep_fp32 and layers, RunConfig's per-layer resolution, follow as config columns once a run
    records them: none|first|last|ends, and the rules as JSON text; a run whose files leave them
    out holds their defaults, none and [])
    params, params_quantized                    parameter counts
    train_loss, val_loss, val_acc, best_val_acc, test_acc, val_ppl, test_ppl
    best_epoch        Int64
    diverged          bool
    diverged_epoch    Int64
    loss_spikes       float
    max_val_acc_drop, final_minus_best, flip_rate, grad_norm, weight_bits
    fp32_bytes, quantized_bytes, packed_bytes    sizes of the stored weights (bytes)
    stored_bytes      float packed_bytes when present, else quantized_bytes (fp32_bytes for fp32)
    compression, fit_seconds
    git_commit, version, torch_version, device  provenance of the run

Accuracies stay fractions in [0, 1] as the runs report them; figures and tables show points (%).

``curves`` columns (``CURVE_COLUMNS``): run_id, the grouping columns ``CURVE_GROUP_COLUMNS``
copied from ``results``, then epoch (1-based), train_loss, train_acc, val_loss, val_acc, val_ppl,
grad_norm, flip_rate, oscillation (the share of quantised weights whose level moved back against
its previous move, an EMA over steps at the epoch's end; NaN where not tracked) and ``lr_epoch``
(the per-epoch learning rate, renamed so it cannot clash with the configured ``lr``). Values
after a divergence may be NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from suite.quant.resolution import Resolution, parse_resolution
from suite.run.files import CONFIG_NAME, CURVES_NAME, RESULT_NAME
from suite.run.files import CURVE_COLUMNS as RUN_CURVE_COLUMNS
from suite.run.files import CURVE_RENAMED as RUN_CURVE_RENAMED
from suite.run.result import RESULT_FIELDS
from suite.sweep.checksum import verify
from suite.sweep.slots import slot_identity
from suite.sweep.studyspec import SPECS_ATTR

# --- precision labels ------------------------------------------------------------------------
# suite.quant.resolution is the one definition; these wrappers add what a reader of old or
# foreign results needs: numpy numbers, missing values, and labels it does not know (kept
# verbatim and sorted by whatever bits they parse to, never an error).


def _resolution(label: Any) -> Resolution | None:
    try:
        return parse_resolution(label)
    except ValueError:
        return None


def normalize_precision(value: Any) -> str | None:
    """Canonical label for a precision value ("2.32", 2.32, "N=5", "levels=5" -> "2.32")."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        text = f"{float(value):g}"
    else:
        text = str(value).strip().lower()
    res = _resolution(text)
    return res.label if res is not None else text


def precision_levels(label: str | None) -> int | None:
    """Number of weight values of a label; None for fp32 and unknown labels."""
    res = _resolution(label)
    return None if res is None else res.levels


def precision_bits(label: str | None) -> float:
    """Bits per weight of a label (log2 N); 32 for fp32; NaN when the label is unknown."""
    res = _resolution(label)
    if res is not None:
        return res.bits
    try:
        return float(label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def precision_sort_key(label: str | None) -> tuple[float, int, str]:
    """Sort by bits, bnn just before the 1-bit grid, fp32 always last, unknown labels after it."""
    bits = precision_bits(label)
    if label == "fp32":
        return (math.inf, 0, "")
    if math.isnan(bits):
        return (math.inf, 1, str(label))
    return (bits, 0 if label == "bnn" else 1, str(label))


def order_precisions(labels: Iterable[Any]) -> list[str]:
    """Distinct labels of ``labels`` in report order (ascending bits, fp32 last)."""
    seen = {normalize_precision(v) for v in labels}
    seen.discard(None)
    return sorted(seen, key=precision_sort_key)  # type: ignore[arg-type]


def grid_kind(label: str | None) -> str | None:
    """fp32 | bnn | zero | no zero: the four ways a resolution is built (Resolution.grid)."""
    res = _resolution(label)
    return None if res is None else res.grid


def bit_budget(label: str | None) -> int | None:
    """k of a level grid with N = 2^k (zero excluded) or 2^k + 1 (zero included)."""
    res = _resolution(label)
    return None if res is None else res.bit_budget


# --- columns ---------------------------------------------------------------------------------

# The report's own columns (where a run came from, and what it derives from the label or the
# sizes), then the RunResult fields it shows (suite.run.result: names, order and dtypes), with the
# derived ones placed after the field they come from.
_REPORT_COLUMNS = {"run_id": "str", "trial": "int", "state": "str", "status": "str", "error": "str",
                   "cell": "str"}
_DERIVED_AFTER = {"zero": {"grid": "str", "k": "int"}, "packed_bytes": {"stored_bytes": "float"}}


def _column_dtypes() -> dict[str, str]:
    dtypes = dict(_REPORT_COLUMNS)
    for f in RESULT_FIELDS:
        if f.column is not None:
            dtypes[f.name] = f.column
            dtypes.update(_DERIVED_AFTER.get(f.name, {}))
    return dtypes


_DTYPES = _column_dtypes()
RESULT_COLUMNS: tuple[str, ...] = tuple(_DTYPES)
CURVE_GROUP_COLUMNS: tuple[str, ...] = (
    "trial", "status", "task", "dataset", "model", "precision", "bits", "levels", "zero", "grid",
    "augment", "epochs", "seed", "lr", "width", "scale_rule", "params",
)
# a run's curves.csv columns (suite/run/files.py), as this frame names them
CURVE_METRICS: tuple[str, ...] = tuple(RUN_CURVE_RENAMED.get(c, c) for c in RUN_CURVE_COLUMNS
                                       if c != "epoch")
CURVE_COLUMNS: tuple[str, ...] = ("run_id", *CURVE_GROUP_COLUMNS, "epoch", *CURVE_METRICS)

# Config fields that are sweep axes by construction; other config fields join the grouping only
# when they look like an axis (see setting_axes).
CORE_AXES: tuple[str, ...] = ("task", "dataset", "model", "width", "augment", "epochs")
_OPTIONAL_AXES: tuple[str, ...] = ("lr", "scale_rule", "keep_fp32", "layers")
# Config columns whose absence means the default (run files leave defaults of later fields out).
_ABSENT_MEANS = {"keep_fp32": "none", "layers": "[]"}
# Name parts (split on "_") of config fields that are bookkeeping, never sweep axes.
_NOT_AXES = frozenset({
    "seed", "dir", "path", "file", "name", "id", "wandb", "git", "time", "device", "storage",
    "out", "worker", "host", "log", "trial", "cell", "version", "threads", "tags", "project",
})
_RESOLUTION_COLUMNS = ("precision", "levels", "bits", "zero", "grid", "k", "resolution")


class EmptyStudy(ValueError):
    """The study exists but holds no trial: there is nothing to report, not even what waits."""


@dataclass
class StudyFrames:
    """Everything the report reads: the tidy frames, the spec and where they came from."""

    results: pd.DataFrame
    curves: pd.DataFrame
    spec: dict | None = None
    spec_yaml: str | None = None
    study_name: str | None = None
    source: str = ""
    config_keys: tuple[str, ...] = field(default_factory=tuple)
    damaged: tuple[str, ...] = ()  # trials whose stored result failed its checksum, as sentences
    unverified: int = 0  # finished trials stored before results carried a checksum
    specs: tuple[str, ...] = ()  # every spec (YAML) of a study extended with `sweep --extend`

    @property
    def completed(self) -> pd.DataFrame:
        """Runs that finished training (diverged ones included: divergence is an outcome)."""
        return self.results[self.results["status"].isin(["ok", "diverged"])]


# --- building frames from records ------------------------------------------------------------


def _scalar(value: Any) -> Any:
    """Keep cells hashable and CSV-friendly: containers become JSON text."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _status(state: str, diverged: Any) -> str:
    if state == "COMPLETE":
        return "diverged" if diverged is True or diverged == 1 else "ok"
    return {"FAIL": "failed", "PRUNED": "pruned", "RUNNING": "running"}.get(state, state.lower())


def _as_bool(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return pd.NA
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        return pd.NA
    return bool(value)


def frames_from_records(
    records: Sequence[Mapping[str, Any]],
    *,
    spec: dict | None = None,
    spec_yaml: str | None = None,
    study_name: str | None = None,
    source: str = "",
) -> StudyFrames:
    """Build the tidy frames from run records.

    A record is a mapping with ``run_id``, ``state`` (Optuna state name), and optionally ``trial``,
    ``result`` (RunResult dict), ``curves`` (list of dicts or a DataFrame), ``config`` (RunConfig
    dict), ``cell`` and ``error``. Both loaders and the synthetic generator go through here so every
    source yields the same columns.
    """
    rows: list[dict[str, Any]] = []
    config_keys: set[str] = set()
    curve_rows: list[dict[str, Any]] = []
    curve_frames: list[pd.DataFrame] = []
    slots: list[str | None] = []  # what makes two trials the same run (sweep_slots.slot_identity)
    for rec in records:
        result = rec.get("result") or {}
        config = rec.get("config") or {}
        config_keys.update(config)
        # Result values win: they are what the run actually did; config fills what results omit
        # (a failed trial has only its config).
        row = {k: _scalar(v) for k, v in config.items()}
        row.update({k: _scalar(v) for k, v in result.items() if k not in _NOT_COLUMNS})
        state = str(rec.get("state") or "COMPLETE").upper()
        row.update(
            run_id=str(rec["run_id"]),
            trial=rec.get("trial"),
            state=state,
            status=rec.get("status") or _status(state, result.get("diverged")),
            error=rec.get("error"),
            cell=rec.get("cell", row.get("cell")),
        )
        for key in _QUEUE_ATTRS:
            if rec.get(key) is not None:
                row[key] = rec[key]
        rows.append(row)
        slots.append(slot_identity(str(row["slot"]), config) if row.get("slot") else None)
        curves = rec.get("curves")
        if isinstance(curves, pd.DataFrame):
            if len(curves):
                curve_frames.append(curves.assign(run_id=row["run_id"]))
        elif curves:
            curve_rows.extend({**c, "run_id": row["run_id"]} for c in curves)
    _mark_retried(rows, slots)
    results = _tidy_results(pd.DataFrame(rows))
    if curve_rows:
        curve_frames.append(pd.DataFrame(curve_rows))
    curves = _tidy_curves(curve_frames, results)
    keys = tuple(sorted(k for k in config_keys if k not in _RESOLUTION_COLUMNS))
    return StudyFrames(results, curves, spec, spec_yaml, study_name, source, keys)


_QUEUE_ATTRS = ("slot", "attempt", "failure")  # the sweep driver's per-trial bookkeeping
_NOT_COLUMNS = frozenset({"layer_table"})  # result fields too large for a cell (result.json has them)


def _mark_retried(rows: list[dict[str, Any]], slots: list[str | None]) -> None:
    """A failed attempt whose slot a later trial finished is history, not a missing run."""
    finished = {s for r, s in zip(rows, slots, strict=True)
                if s and r["status"] in ("ok", "diverged", "pruned")}
    for r, s in zip(rows, slots, strict=True):
        if r["status"] == "failed" and s in finished:
            r["status"] = "retried"


def _tidy_results(df: pd.DataFrame) -> pd.DataFrame:
    n = len(df)
    for col in RESULT_COLUMNS:
        if col not in df:
            df[col] = pd.NA
    df["precision"] = [normalize_precision(v) for v in df["precision"]]
    labels = df["precision"]
    # Derive resolution columns from the label where the run did not record them, and always
    # derive grid/k/zero: studies run before bnn's zero was settled recorded zero=true for it.
    levels = [precision_levels(x) for x in labels]
    df["levels"] = [lv if pd.isna(v) else v for v, lv in zip(df["levels"], levels, strict=True)]
    df["bits"] = [precision_bits(x) if pd.isna(v) else v for v, x in zip(df["bits"], labels,
                                                                          strict=True)]
    df["grid"] = [grid_kind(x) for x in labels]
    df["zero"] = [g == "zero" if g is not None else _as_bool(z)
                  for g, z in zip(df["grid"], df["zero"], strict=True)]
    df["k"] = [bit_budget(x) if g in ("zero", "no zero") else None
               for x, g in zip(labels, df["grid"], strict=True)]
    if n:
        text = df["val_ppl"].notna() if "val_ppl" in df else pd.Series(False, index=df.index)
        df["task"] = df["task"].where(df["task"].notna(), np.where(text, "text", "image"))
        df["augment"] = df["augment"].where(df["augment"].notna(), "none")
        for col, default in _ABSENT_MEANS.items():
            if col in df:  # only studies that recorded the field get its column
                df[col] = df[col].where(df[col].notna(), default)
    for col, dtype in _DTYPES.items():
        if dtype == "int":
            df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
        elif dtype == "float":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        elif dtype == "bool":
            df[col] = pd.array([_as_bool(v) for v in df[col]], dtype="boolean")
        else:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
            df[col] = [None if v is None else str(v) for v in df[col]]
    stored = df["packed_bytes"].where(df["packed_bytes"].notna(), df["quantized_bytes"])
    fp32 = df["precision"] == "fp32"
    stored = stored.where(~fp32 | stored.notna(), df["fp32_bytes"])
    df["stored_bytes"] = stored.astype(float)
    if n:
        done = df["status"].isin(["ok", "diverged"])
        df["diverged"] = df["diverged"].where(~done | df["diverged"].notna(), False)
    extras = sorted(c for c in df.columns if c not in RESULT_COLUMNS)
    df = df[[*RESULT_COLUMNS, *extras]]
    order = {label: i for i, label in enumerate(order_precisions(df["precision"]))}
    df = df.assign(_o=df["precision"].map(order), _t=df["trial"])
    return df.sort_values(["_o", "_t", "run_id"]).drop(columns=["_o", "_t"]).reset_index(drop=True)


def _tidy_curves(frames: list[pd.DataFrame], results: pd.DataFrame) -> pd.DataFrame:
    if frames:
        curves = pd.concat(frames, ignore_index=True)
    else:
        curves = pd.DataFrame(columns=["run_id", "epoch"])
    curves = curves.rename(columns=RUN_CURVE_RENAMED)
    for col in ("epoch", *CURVE_METRICS):
        if col not in curves:
            curves[col] = np.nan
        curves[col] = pd.to_numeric(curves[col], errors="coerce").astype(float)
    curves["epoch"] = curves["epoch"].round().astype("Int64")
    curves["run_id"] = curves["run_id"].astype(str)
    group = results[["run_id", *CURVE_GROUP_COLUMNS]]
    curves = curves.drop(columns=[c for c in CURVE_GROUP_COLUMNS if c in curves])
    curves = curves.merge(group, on="run_id", how="left")
    extras = sorted(c for c in curves.columns if c not in CURVE_COLUMNS)
    return curves[[*CURVE_COLUMNS, *extras]].sort_values(["run_id", "epoch"]).reset_index(drop=True)


# --- grouping --------------------------------------------------------------------------------


def setting_axes(frames: StudyFrames) -> list[str]:
    """Columns that tell one configuration (seeds and resolution aside) from another.

    Core axes always count. Other config fields count only when they vary, do not look like
    per-run bookkeeping (seed, paths, names, ids, W&B, ...), and repeat across runs; a field that
    is unique per run (a run directory, a sampled learning rate) would leave one seed per group.
    """
    done = frames.completed
    axes = [c for c in CORE_AXES if c in frames.results]
    candidates = [*_OPTIONAL_AXES, *frames.config_keys]
    for col in candidates:
        if col in axes or col in _RESOLUTION_COLUMNS or col not in done:
            continue
        if _NOT_AXES.intersection(col.lower().split("_")):
            continue
        values = done[col].dropna()
        distinct = values.nunique()
        if 2 <= distinct <= max(1, len(done) // 2):
            axes.append(col)
    return axes


# --- loaders ---------------------------------------------------------------------------------


def load_study(study_name: str, storage: Any) -> StudyFrames:
    """Read every trial of an Optuna study into tidy frames (the spec from study user_attrs).

    ``storage`` is an RDB URL, a JournalStorage log file path or an Optuna storage object. It is
    only read: a journal file or SQLite database that does not exist is a FileNotFoundError.
    """
    import optuna

    from suite.sweep.storage import describe, open_storage

    if isinstance(storage, (str, Path)):
        where = describe(str(storage))
        storage = open_storage(str(storage), create=False)
    else:
        where = type(storage).__name__  # already a storage object
    study = optuna.load_study(study_name=study_name, storage=storage)
    records = []
    damaged: list[str] = []
    unverified = 0
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        config = attrs.get("config") or dict(t.params)
        record = {
            "run_id": f"trial-{t.number}",
            "trial": t.number,
            "state": t.state.name,
            "result": attrs.get("result"),
            "curves": attrs.get("curves"),
            "config": config,
            "cell": attrs.get("cell"),
            "error": attrs.get("error"),
            **{k: attrs.get(k) for k in _QUEUE_ATTRS},
        }
        intact = verify(attrs)
        if attrs.get("failure") == "damaged":  # failed by repair-journal, its cell queued again
            record.update(result=None, curves=None)
        elif intact is False:  # changed after it was written: shown as damage, never used
            damaged.append(f"trial {t.number} (cell {attrs.get('cell')}): {DAMAGED}")
            record.update(result=None, curves=None, status="failed", failure="damaged",
                          error=f"damaged: {DAMAGED}; its result is left out")
        elif intact is None and attrs.get("result") is not None:
            unverified += 1
        records.append(record)
    if not records:
        raise EmptyStudy(f"study {study_name!r} in {where} has no trials yet")
    spec = study.user_attrs.get("spec")
    spec_yaml = study.user_attrs.get("spec_yaml")
    if spec is None and spec_yaml:
        spec = _parse_yaml(spec_yaml)
    frames = frames_from_records(
        records, spec=spec, spec_yaml=spec_yaml, study_name=study_name,
        source=f"Optuna study {study_name!r} in {where}",
    )
    frames.damaged, frames.unverified = tuple(damaged), unverified
    frames.specs = tuple(study.user_attrs.get(SPECS_ATTR) or ())
    return frames


DAMAGED = ("its stored config and result do not match the checksum written with them (changed "
           "after the run finished, or moved from another trial)")


def _parse_yaml(text: str) -> dict | None:
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception:  # a spec we cannot read is reported as text only
        return None
    return data if isinstance(data, dict) else None


def load_run_dirs(paths: Iterable[str | Path]) -> StudyFrames:
    """Read run directories (each with ``result.json`` and, optionally, ``curves.csv``).

    A path may be a run directory or any folder above run directories; it is searched for
    ``result.json`` files. ``config.json`` beside them, when present, adds the RunConfig.
    """
    records = []
    roots = [Path(p) for p in paths]
    dirs: list[Path] = []
    for root in roots:
        if (root / RESULT_NAME).is_file():
            dirs.append(root)
        else:
            dirs.extend(sorted(p.parent for p in root.rglob(RESULT_NAME)))
    dirs = list(dict.fromkeys(dirs))
    names = [d.name for d in dirs]
    if len(set(names)) < len(names):  # same run name under two sweeps: keep the parent too
        names = [f"{d.parent.name}/{d.name}" for d in dirs]
    for d, run_id in zip(dirs, names, strict=True):
        result = json.loads((d / RESULT_NAME).read_text())
        config_path = d / CONFIG_NAME
        config = json.loads(config_path.read_text()) if config_path.is_file() else None
        curves_path = d / CURVES_NAME
        curves = pd.read_csv(curves_path) if curves_path.is_file() else None
        records.append(
            {"run_id": run_id, "state": "COMPLETE", "result": result, "curves": curves,
             "config": config}
        )
    names = ", ".join(str(r) for r in roots)
    return frames_from_records(records, source=f"run directories under {names}")
