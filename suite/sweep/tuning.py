"""Tuning and pruning inside one grid cell.

A study holds many cells (fp32 and 1-bit runs side by side). Optuna's TPE and median pruner look at
every trial of a study, so a 1-bit run would be pruned for trailing the fp32 runs and its learning
rate drawn from fp32's good region. These wrappers show the inner sampler or pruner only the trials
of the cell at hand, by copying them into a throw-away in-memory study.
"""

from __future__ import annotations

import zlib
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from suite.sweep.slots import cell_identity
from suite.sweep.spec import TuneParam


def distribution(param: TuneParam) -> optuna.distributions.BaseDistribution:
    """The distribution ``suggest`` records ``param`` under (a W&B agent's trial records its value
    under the same one; tests/sweep/test_wandb_sweep.py checks that they agree)."""
    if param.kind == "categorical":
        return optuna.distributions.CategoricalDistribution(list(param.choices))
    if param.kind == "int":
        return optuna.distributions.IntDistribution(int(param.low), int(param.high), log=param.log)
    return optuna.distributions.FloatDistribution(param.low, param.high, log=param.log)


def suggest(trial: optuna.Trial, param: TuneParam) -> Any:
    if param.kind == "categorical":
        return trial.suggest_categorical(param.name, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(param.name, int(param.low), int(param.high), log=param.log)
    return trial.suggest_float(param.name, param.low, param.high, log=param.log)


def _same_cell(study: optuna.Study, trial: FrozenTrial,
               states: tuple[TrialState, ...]) -> list[FrozenTrial]:
    cell = cell_identity(trial.user_attrs)
    return [t for t in study.get_trials(deepcopy=False, states=states)
            if cell_identity(t.user_attrs) == cell and t.number != trial.number]


def _quiet_study(**kwargs: Any) -> optuna.Study:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(**kwargs)
    finally:
        optuna.logging.set_verbosity(level)


class CellSampler(optuna.samplers.BaseSampler):
    """TPE over the completed trials of the same cell only (random until ``n_startup`` exist)."""

    def __init__(self, seed: int = 0, n_startup: int = 3) -> None:
        self._seed = seed
        self._n_startup = n_startup

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        history = [t for t in _same_cell(study, trial, (TrialState.COMPLETE,))
                   if param_name in t.params]
        seed = zlib.crc32(f"{self._seed}/{trial.user_attrs.get('slot')}/{trial.number}".encode())
        tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self._n_startup)
        cell = _quiet_study(directions=study.directions, sampler=tpe)
        cell.add_trials([
            optuna.trial.create_trial(params={param_name: t.params[param_name]},
                                      distributions={param_name: t.distributions[param_name]},
                                      values=t.values)
            for t in history
        ])
        return cell.ask({param_name: param_distribution}).params[param_name]


class CellPruner(optuna.pruners.BasePruner):
    """Runs ``inner`` (median, hyperband) against the finished trials of the same cell."""

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self._inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        peers = _same_cell(study, trial, (TrialState.COMPLETE, TrialState.PRUNED))
        cell = _quiet_study(study_name=f"cell:{trial.user_attrs.get('cell')}",
                            directions=study.directions, pruner=self._inner)
        copies = []
        for t in peers:
            copies.append(optuna.trial.create_trial(
                state=t.state, values=t.values if t.state == TrialState.COMPLETE else None,
                intermediate_values=dict(t.intermediate_values)))
        copies.append(optuna.trial.create_trial(state=TrialState.RUNNING,
                                                intermediate_values=dict(trial.intermediate_values)))
        cell.add_trials(copies)
        return self._inner.prune(cell, cell.get_trials(deepcopy=False)[-1])


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return CellPruner(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    if name == "hyperband":
        return CellPruner(optuna.pruners.HyperbandPruner(min_resource=1))
    return optuna.pruners.NopPruner()
