"""What a sweep prints: trials done / total with an ETA, a bar in a terminal, one plain line per
trial elsewhere (CI, a log file)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys

import optuna
from optuna.trial import TrialState

from suite.run.config import RunConfig


class Progress:
    """Trials done / total with an ETA: a bar in a terminal, one plain line per trial elsewhere."""

    def __init__(self, study: optuna.Study, total: int, already: int,
                 axes: tuple[str, ...] = ("model", "precision", "seed")) -> None:
        self._study = study
        # Name a trial by what tells it apart: the spec's varying fields, model and precision first.
        self._axes = ("model", "precision", *(a for a in axes if a not in ("model", "precision")))
        self._seen: set[int] = {t.number for t in study.get_trials(deepcopy=False)
                                if t.state.is_finished()}
        self._done = already
        self._total = total
        self._tty = sys.stderr.isatty() and not os.environ.get("CI")
        self._bar = None
        if self._tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=already, unit="trial", desc="sweep",
                             dynamic_ncols=True)

    def poll(self) -> None:
        with contextlib.suppress(Exception):  # progress must never break a sweep
            for t in self._study.get_trials(deepcopy=False):
                if not t.state.is_finished() or t.number in self._seen:
                    continue
                self._seen.add(t.number)
                self._show(t)

    def _show(self, t: optuna.trial.FrozenTrial) -> None:
        cfg = t.user_attrs.get("config", {})
        result = t.user_attrs.get("result") or {}
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self._done += 1
        what = " ".join(str(cfg.get(a)) if a in ("model", "precision") else f"{a}={cfg.get(a)}"
                        for a in self._axes if a in _ALWAYS_SHOWN or _told_apart(a, cfg.get(a)))
        if t.state == TrialState.COMPLETE:
            acc = result.get("val_acc")
            outcome = "diverged" if result.get("diverged") else (
                f"val_acc={acc:.3f}" if isinstance(acc, float) else "done")
            outcome += f" ({result.get('fit_seconds', 0):.1f} s)"
        elif t.state == TrialState.FAIL:
            outcome = "FAILED: " + str(t.user_attrs.get("error", "")).splitlines()[0][:120]
        else:
            outcome = t.state.name.lower()
        line = f"[{self._done}/{self._total}] trial {t.number} {what}: {outcome}"
        if self._bar is not None:
            self._bar.update(1 if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else 0)
            if t.state == TrialState.FAIL:
                self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.poll()
        if self._bar is not None:
            self._bar.close()


_ALWAYS_SHOWN = ("model", "precision", "seed")


def _told_apart(field_name: str, value: object) -> bool:
    """Whether a varying field is worth naming for this trial: an axis of another grid (an LM's
    block_size on an image run, an unset subset) sits at its default and says nothing."""
    default = _RUNCONFIG_DEFAULTS.get(field_name, _MISSING)
    return value is not None and value != default


_MISSING = object()
_RUNCONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)
                       if f.default is not dataclasses.MISSING}
