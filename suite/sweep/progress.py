"""What a sweep prints: trials done / total, elapsed time and an ETA — a bar with one line per
finished trial above it in a terminal, one plain line per trial elsewhere (CI, a log file).

The ETA weighs what is left by what it costs: a study queues cheap and dear cells together (the
default study's FC trials take a second, its LM trials a minute), so "mean seconds per trial so
far" is off by 10x early on. Each remaining trial is costed at the seconds per epoch measured for
its model and width (else its model, else all models), times its epochs, and the sum is scaled by
the wall time the finished work took here, which also accounts for the number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections import defaultdict
from datetime import datetime

import optuna
from optuna.trial import TrialState

from suite.run.config import RunConfig

_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


class Progress:
    """Trials done / total, elapsed and ETA: a bar in a terminal, one plain line per trial
    elsewhere. Every finished trial is named with its outcome in both places."""

    def __init__(self, study: optuna.Study, total: int, already: int,
                 axes: tuple[str, ...] = ("model", "precision", "seed")) -> None:
        self._study = study
        # Name a trial by what tells it apart: the spec's varying fields, model and precision first.
        self._axes = ("model", "precision", *(a for a in axes if a not in ("model", "precision")))
        self._seen: set[int] = {t.number for t in study.get_trials(deepcopy=False)
                                if t.state.is_finished()}
        self._done = already
        self._total = total
        self._start = time.monotonic()
        self._costs = _Costs()
        self._eta: float | None = None
        self._tty = sys.stderr.isatty() and not os.environ.get("CI")
        self._bar = None
        if self._tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=already, unit="trial", desc="sweep",
                             dynamic_ncols=True, file=sys.stderr,
                             bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}{postfix}]")

    def poll(self) -> None:
        with contextlib.suppress(Exception):  # progress must never break a sweep
            trials = self._study.get_trials(deepcopy=False)
            new = [t for t in trials if t.state.is_finished() and t.number not in self._seen]
            pending = [t.user_attrs.get("config", {}) for t in trials if not t.state.is_finished()]
            for t in new:
                self._seen.add(t.number)
                if t.state in _COUNTED:
                    self._done += 1
                    self._costs.add(t)
                self._eta = self._costs.eta(time.monotonic() - self._start, pending)
                self._show(t)

    def _show(self, t: optuna.trial.FrozenTrial) -> None:
        line = f"[{self._status()}] trial {t.number} {self._name(t)}: {_outcome(t)}"
        if self._bar is not None:
            self._bar.set_postfix_str(f"eta {_clock(self._eta)}" if self._eta is not None else "",
                                      refresh=False)
            self._bar.update(1 if t.state in _COUNTED else 0)
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def _status(self) -> str:
        elapsed = _clock(time.monotonic() - self._start)
        eta = _clock(self._eta) if self._eta is not None else "--"
        return (f"{self._done}/{self._total} {datetime.now():%H:%M:%S} "
                f"elapsed {elapsed} eta {eta}")

    def _name(self, t: optuna.trial.FrozenTrial) -> str:
        cfg = t.user_attrs.get("config", {})
        return " ".join(str(cfg.get(a)) if a in ("model", "precision") else f"{a}={cfg.get(a)}"
                        for a in self._axes if a in _ALWAYS_SHOWN or _told_apart(a, cfg.get(a)))

    def close(self) -> None:
        self.poll()
        if self._bar is not None:
            self._bar.close()


def _outcome(t: optuna.trial.FrozenTrial) -> str:
    result = t.user_attrs.get("result") or {}
    if t.state == TrialState.COMPLETE:
        acc = result.get("val_acc")
        outcome = "diverged" if result.get("diverged") else (
            f"val_acc={acc:.3f}" if isinstance(acc, float) else "done")
        return outcome + f" ({result.get('fit_seconds', 0):.1f} s)"
    if t.state == TrialState.FAIL:
        return "FAILED: " + str(t.user_attrs.get("error", "")).splitlines()[0][:120]
    return t.state.name.lower()


def _clock(seconds: float) -> str:
    """0:07:05 for 425 s: hours always shown, so a long study's lines line up."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Costs:
    """Seconds per epoch of the trials finished in this process, by (model, width) and model."""

    def __init__(self) -> None:
        self._per_epoch: dict[tuple, list[float]] = defaultdict(list)
        self._spent = 0.0  # trial seconds of the finished trials

    def add(self, t: optuna.trial.FrozenTrial) -> None:
        if t.datetime_start is None or t.datetime_complete is None:
            return
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        cfg = t.user_attrs.get("config", {})
        epochs = max(1, int(cfg.get("epochs") or 1))
        for key in _keys(cfg):
            self._per_epoch[key].append(seconds / epochs)
        self._spent += seconds

    def cost(self, cfg: dict) -> float:
        for key in _keys(cfg):
            if self._per_epoch.get(key):
                seen = self._per_epoch[key]
                return sum(seen) / len(seen) * max(1, int(cfg.get("epochs") or 1))
        return 0.0

    def eta(self, elapsed: float, pending: list[dict]) -> float | None:
        """Wall seconds left: the pending trials' estimated trial seconds, at the rate at which
        this process's wall clock has turned trial seconds so far (workers in parallel)."""
        if self._spent <= 0:
            return None
        return sum(self.cost(cfg) for cfg in pending) * elapsed / self._spent


def _keys(cfg: dict) -> tuple[tuple, ...]:
    return (("model", cfg.get("model"), cfg.get("width")), ("model", cfg.get("model")), ("all",))


_ALWAYS_SHOWN = ("model", "precision", "seed")


def _told_apart(field_name: str, value: object) -> bool:
    """Whether a varying field is worth naming for this trial: an axis of another grid (an LM's
    block_size on an image run, an unset subset) sits at its default and says nothing."""
    default = _RUNCONFIG_DEFAULTS.get(field_name, _MISSING)
    return value is not None and value != default


_MISSING = object()
_RUNCONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)
                       if f.default is not dataclasses.MISSING}
