"""What a sweep prints while it runs: done/total, the clock, elapsed time and an ETA on every
line of a log, and an ETA that weighs the trials left by what trials like them cost."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import optuna
from optuna.trial import TrialState

from suite.sweep.progress import Progress, _Costs

T0 = datetime(2026, 1, 1, 12, 0, 0)


def _trial(number: int, model: str, epochs: int, seconds: float | None,
           state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    finished = state.is_finished()
    return optuna.trial.FrozenTrial(
        number=number, trial_id=number, state=state, value=0.5 if finished else None,
        values=None, datetime_start=T0 if seconds is not None else None,
        datetime_complete=T0 + timedelta(seconds=seconds) if finished else None, params={},
        distributions={}, user_attrs={"config": {"model": model, "epochs": epochs, "width": 1.0,
                                                 "seed": 0},
                                      "result": {"val_acc": 0.5, "fit_seconds": seconds or 0}},
        system_attrs={}, intermediate_values={})


def test_eta_costs_the_trials_left_by_their_model_and_epochs() -> None:
    """Cheap FC trials finished first must not promise that the LM trials left are as cheap."""
    costs = _Costs()
    for i in range(4):
        costs.add(_trial(i, "fc", 2, 2.0))  # 1 s an epoch
    costs.add(_trial(4, "lm", 2, 60.0))  # 30 s an epoch
    pending = [{"model": "lm", "epochs": 4, "width": 1.0}] * 3 + [{"model": "fc", "epochs": 2,
                                                                  "width": 1.0}]
    # 3 x 120 s + 2 s of trial time left; the wall clock ran 34 s for 68 trial seconds (2 workers).
    assert costs.eta(34.0, pending) == (3 * 120 + 2) * 34.0 / 68.0
    # A naive mean over trials would say 4 x 13.6 s x 0.5 = 27 s: seven times too little.


def test_eta_falls_back_to_the_model_then_to_all_models() -> None:
    costs = _Costs()
    costs.add(_trial(0, "cnn", 1, 5.0))
    assert costs.cost({"model": "cnn", "epochs": 3, "width": 0.5}) == 15.0  # same model, any width
    assert costs.cost({"model": "vit", "epochs": 2, "width": 1.0}) == 10.0  # nothing like it yet
    assert _Costs().eta(10.0, [{"model": "fc", "epochs": 1}]) is None  # nothing finished: no ETA


def test_a_log_line_says_done_total_clock_elapsed_and_eta(capsys) -> None:
    study = optuna.create_study(direction="maximize")
    progress = Progress(study, total=3, already=0, axes=("model", "precision", "seed"))
    for t in (_trial(0, "fc", 2, 2.0), _trial(1, "lm", 2, 6.0)):
        study.add_trial(t)
    study.enqueue_trial({}, user_attrs={"config": {"model": "lm", "epochs": 2, "width": 1.0}})
    progress.close()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "] trial " in ln]
    assert len(lines) == 2
    pattern = (r"\[(\d)/3 \d\d:\d\d:\d\d elapsed \d+:\d\d:\d\d eta (--|\d+:\d\d:\d\d)\] "
               r"trial \d (fc|lm) None seed=0: val_acc=0\.500 \(\d\.\d s\)")
    assert all(re.fullmatch(pattern, ln) for ln in lines), lines
    assert [re.match(r"\[(\d)", ln).group(1) for ln in lines] == ["1", "2"]
    assert "eta --" not in lines[-1]  # trials finished: an ETA for the one still waiting
