"""One run end to end: real Lightning Trainer, real offline W&B runs, embedded data, tiny models.

The expensive part (16 short runs: fc, cnn, vit on digits and lm on stdlib-text, each at fp32,
1 bit, 2.32 bits and bnn) runs once per module in ``matrix`` and is asserted by several tests.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import signal
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from suite.run.config import ConfigError, RunConfig
from suite.run.result import CONTRACT_FIELDS, LM_FIELDS, RESULT_FIELDS
from suite.run.tracking import read_offline_run
from suite.run.train import dataset_for, load_trained, train

pytestmark = pytest.mark.slow

FAMILIES = ("fc", "cnn", "vit", "lm")
PRECISIONS = ("fp32", "1", "2.32", "bnn")
EXPECTED = {  # precision -> (levels, bits, zero); zero is the zero-in/zero-out axis of level grids
    "fp32": (None, 32.0, False),
    "1": (2, 1.0, False),
    "2.32": (5, math.log2(5), True),
    "bnn": (2, 1.0, False),
}
# Result fields that legitimately differ between two identical runs (git_commit too: others
# commit to this checkout while the tests run).
VOLATILE = {"fit_seconds", "wandb_run_id", "git_commit"}


@pytest.fixture(autouse=True, scope="module")
def _offline_wandb():
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("CI", "true")
    yield
    mp.undo()


def tiny(model: str, precision: str = "2.32", **changes: Any) -> RunConfig:
    if model == "lm":
        base = {"dataset": "stdlib-text", "subset": 64, "block_size": 32}
    else:
        base = {"dataset": "digits", "subset": 20}
    return RunConfig(model=model, precision=precision, **{"width": 0.5, "epochs": 2, **base,
                                                          **changes})


def wandb_run(run_dir: Path) -> dict[str, Any]:
    return read_offline_run((run_dir / "wandb_run.txt").read_text().strip(), wait=10)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict[tuple[str, str], tuple[Path, RunConfig, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("matrix")
    runs = {}
    for model in FAMILIES:
        for precision in PRECISIONS:
            config = tiny(model, precision)
            out = root / f"{model}-{precision}"
            runs[(model, precision)] = (out, config, train(config, out))
    return runs


CELLS = [(m, p) for m in FAMILIES for p in PRECISIONS]


@pytest.mark.parametrize(("model", "precision"), CELLS)
def test_result_json_has_every_contract_field(matrix, model, precision) -> None:
    out, config, returned = matrix[(model, precision)]
    result = json.loads((out / "result.json").read_text())
    assert result == returned
    wanted = CONTRACT_FIELDS + (LM_FIELDS if model == "lm" else ())
    assert [f for f in wanted if f not in result] == []
    # the record is exactly RunConfig + RESULT_FIELDS, each value of its declared type (or null)
    table = {f.name: f for f in RESULT_FIELDS if model == "lm" or not f.text_only}
    assert set(result) == set(config.to_dict()) | set(table)
    for name, f in table.items():
        value = result[name]
        ok = value is None or isinstance(value, f.type) or (f.type is float and isinstance(value, int))
        assert ok and not (f.type is not bool and isinstance(value, bool)), (name, value)
    levels, bits, zero = EXPECTED[precision]
    assert (result["levels"], result["zero"]) == (levels, zero)
    assert result["bits"] == pytest.approx(bits)
    assert result["weight_bits"] >= (bits if precision != "fp32" else 32.0) - 1e-9
    assert result["precision"] == precision and result["model"] == model
    assert result["diverged"] is False and result["diverged_epoch"] is None
    assert result["epochs_run"] == 2 and result["best_epoch"] in (1, 2)
    for key in ("train_loss", "val_loss", "val_acc", "test_acc", "best_val_acc", "fit_seconds"):
        assert isinstance(result[key], float) and math.isfinite(result[key]), key
    assert 0.0 <= result["test_acc"] <= 1.0
    if precision == "fp32":
        assert result["params_quantized"] == 0 and result["flip_rate"] is None
        assert result["compression"] == pytest.approx(1.0)
    else:
        assert 0 < result["params_quantized"] <= result["params"]
        assert 0.0 <= result["flip_rate"] <= 1.0
        assert result["compression"] > 1.0
    if model == "lm":
        assert result["val_ppl"] == pytest.approx(math.exp(result["val_loss"]), rel=1e-4)
        assert result["test_ppl"] == pytest.approx(math.exp(result["test_loss"]), rel=1e-4)
    for key in ("version", "git_commit", "torch_version", "device"):
        assert result[key], key
    curves = (out / "curves.csv").read_text().splitlines()
    assert len(curves) == 3 and curves[0].startswith("epoch,train_loss")
    for name in ("config.json", "model.json", "model.safetensors"):
        assert (out / name).is_file(), name


@pytest.mark.parametrize(("model", "precision"), CELLS)
def test_wandb_offline_run_config_matches_the_run_config(matrix, model, precision) -> None:
    out, config, result = matrix[(model, precision)]
    run = wandb_run(out)
    assert Path((out / "wandb_run.txt").read_text().strip()).parent == out / "wandb"
    logged = run["config"]
    for key, value in config.to_dict().items():
        assert logged[key] == value, key
    for key in ("bits", "levels", "zero", "params", "params_quantized", "task"):
        assert logged[key] == result[key], key
    assert run["group"] == config.group()
    assert {model, precision} <= set(run["tags"])
    assert run["id"] == result["wandb_run_id"]
    assert run["exit_code"] == 0
    assert run["summary"]["test_acc"] == pytest.approx(result["test_acc"])
    assert run["summary"]["diverged"] is False


@pytest.mark.parametrize(("model", "precision"), CELLS)
def test_wandb_history_is_the_curves_per_epoch_with_best_values(matrix, model, precision) -> None:
    out, _, result = matrix[(model, precision)]
    run = wandb_run(out)
    assert run["metrics"]["*"] == "epoch"
    with (out / "curves.csv").open() as f:
        curves = list(csv.DictReader(f))
    rows = [r for r in run["history"] if "train_loss" in r]
    assert [r["epoch"] for r in rows] == [int(c["epoch"]) for c in curves] == [1, 2]
    for row, curve in zip(rows, curves):
        for column, text in curve.items():  # every curve the report draws, per epoch
            if text == "":
                assert column not in row, column
            else:
                assert row[column] == pytest.approx(float(text), rel=1e-6), column
    wanted = {"lr", "grad_norm", "val_acc", "val_loss", "train_acc"}
    wanted |= {"val_ppl"} if model == "lm" else set()
    wanted |= {"flip_rate"} if precision != "fp32" else set()
    assert wanted <= set(rows[-1]), wanted - set(rows[-1])
    tested = [r for r in run["history"] if "test_acc" in r]
    assert len(tested) == 1 and tested[0]["epoch"] == 2
    assert tested[0]["test_acc"] == pytest.approx(result["test_acc"])
    summary = run["summary"]
    assert summary["best/val_acc"] == pytest.approx(max(float(c["val_acc"]) for c in curves))
    assert summary["best/val_loss"] == pytest.approx(min(float(c["val_loss"]) for c in curves))
    assert ("best/val_ppl" in summary) == (model == "lm")


def test_oscillation_tracking_records_it_and_changes_nothing_trained(matrix, tmp_path) -> None:
    out, config, plain = matrix[("cnn", "2.32")]
    tracked = train(config.replace(track_oscillation=True), tmp_path / "tracked")
    with (tmp_path / "tracked" / "curves.csv").open() as f:
        rates = [float(r["oscillation"]) for r in csv.DictReader(f)]
    assert len(rates) == 2 and all(0.0 <= r <= 1.0 for r in rates)
    assert tracked["oscillation"] == rates[-1] and tracked["max_oscillation"] == max(rates)
    assert plain["oscillation"] is None and plain["max_oscillation"] is None
    assert config.replace(track_oscillation=True).fingerprint() == config.fingerprint()
    # model.bsw's header holds the config, which records track_oscillation only when it is on
    skip = VOLATILE | {"oscillation", "max_oscillation", "track_oscillation", "packed_bytes",
                       "packed_compression", "packed_ratio"}
    assert {k: v for k, v in tracked.items() if k not in skip} == \
        {k: v for k, v in plain.items() if k not in skip}
    weights = [(d / "model.safetensors").read_bytes() for d in (out, tmp_path / "tracked")]
    assert weights[0] == weights[1]  # the same trained weights, bit for bit
    fp32 = train(tiny("fc", "fp32", track_oscillation=True), tmp_path / "fp32")
    assert fp32["oscillation"] is None  # nothing quantised, nothing to oscillate


def test_every_run_is_its_own_wandb_run(matrix) -> None:
    ids = [r["wandb_run_id"] for _, _, r in matrix.values()]
    assert len(set(ids)) == len(ids) == len(CELLS)
    dirs = {(out / "wandb_run.txt").read_text() for out, _, _ in matrix.values()}
    assert len(dirs) == len(CELLS)


@pytest.mark.parametrize("model", FAMILIES)
def test_same_config_and_seed_give_identical_results(matrix, tmp_path, model) -> None:
    out, config, first = matrix[(model, "2.32")]
    again = train(config, tmp_path / "again")
    differ = {k: (first[k], again.get(k)) for k in first
              if k not in VOLATILE and first[k] != again.get(k)}
    assert differ == {}
    assert set(again) == set(first)
    assert (tmp_path / "again" / "curves.csv").read_text() == (out / "curves.csv").read_text()
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (out / "model.safetensors").read_bytes()
    assert again["wandb_run_id"] != first["wandb_run_id"]


def test_another_seed_gives_another_run_in_the_same_group(matrix, tmp_path) -> None:
    _, config, first = matrix[("cnn", "2.32")]
    other = train(config.replace(seed=1), tmp_path / "seed1")
    assert other["val_loss"] != first["val_loss"]
    assert other["wandb_group"] == first["wandb_group"]


@pytest.mark.parametrize(("model", "precision"), [(m, p) for m in FAMILIES for p in ("2.32", "bnn")])
def test_load_trained_reproduces_the_test_metrics(matrix, model, precision) -> None:
    out, config, result = matrix[(model, precision)]
    net = load_trained(out)
    data = dataset_for(config)
    with torch.no_grad():
        logits = torch.cat([net(x) for x in data.test_x.split(256)])
        again = torch.cat([load_trained(out)(x) for x in data.test_x.split(256)])
    assert torch.equal(logits, again)
    flat, target = logits.reshape(-1, logits.shape[-1]), data.test_y.reshape(-1)
    acc = (flat.argmax(-1) == target).float().mean().item()
    loss = F.cross_entropy(flat, target).item()
    assert acc == pytest.approx(result["test_acc"], abs=1e-6)
    assert loss == pytest.approx(result["test_loss"], rel=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "2.32"])
def test_absurd_lr_is_a_diverged_result(tmp_path, precision) -> None:
    result = train(tiny("cnn", precision, lr=1e6), tmp_path / "run")
    assert result["diverged"] is True and result["diverged_epoch"] == 1
    assert result["epochs_run"] == 1 and result["test_acc"] is None
    assert json.loads((tmp_path / "run" / "result.json").read_text())["diverged"] is True
    assert wandb_run(tmp_path / "run")["exit_code"] == 0  # a result, not a failure


class _Poison(L.Callback):
    """Turns the weights to NaN at the first step of ``epoch`` (0-based)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(math.nan)


def test_nan_loss_stops_the_run_and_records_its_epoch(tmp_path) -> None:
    result = train(tiny("cnn", "fp32", epochs=4), tmp_path / "run", callbacks=[_Poison(epoch=1)])
    assert result["diverged"] is True and result["diverged_epoch"] == 2
    assert result["epochs_run"] == 2
    assert result["best_epoch"] == 1 and math.isfinite(result["best_val_acc"])
    assert result["test_acc"] is None


class _AcceleratorStyleChecks(L.Callback):
    """Makes the CPU run check divergence as on a GPU: every CHECK_EVERY steps and at the end
    of each epoch, not every step."""

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.check_every_step = False


def test_divergence_checked_lazily_still_records_the_right_epoch(tmp_path) -> None:
    result = train(tiny("cnn", "fp32", epochs=4), tmp_path / "run",
                   callbacks=[_AcceleratorStyleChecks(), _Poison(epoch=2)])
    assert result["diverged"] is True and result["diverged_epoch"] == 3
    assert result["epochs_run"] == 3 and result["best_epoch"] in (1, 2)


class _Raise(L.Callback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 1:
            raise self.error


@pytest.mark.parametrize(("error", "code"), [(KeyboardInterrupt(), 255), (RuntimeError("boom"), 1)])
def test_failure_mid_fit_finishes_wandb_and_writes_no_result(tmp_path, error, code) -> None:
    out = tmp_path / "run"
    config = tiny("cnn", "2.32")
    # (a finished run in the same directory is kept as it was: tests/run/test_outdir.py)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(type(error)):
        train(config, out, callbacks=[_Raise(error)])
    assert not (out / "result.json").exists()
    assert not (out / "curves.csv").exists()  # this run had no finished epoch
    assert not list(out.glob("*.tmp"))
    run = wandb_run(out)
    assert run["exit_code"] == code
    assert signal.getsignal(signal.SIGINT) is handler
    # the process goes on: the next run is a new, finished W&B run
    again = train(config, tmp_path / "next")
    assert again["wandb_run_id"] not in (run["id"],)
    assert wandb_run(tmp_path / "next")["exit_code"] == 0


def test_pruned_trial_keeps_its_curves_and_is_not_a_failed_wandb_run(tmp_path) -> None:
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # val_acc is always below 2: pruned at the first epoch past the warm-up one
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=2.0, n_warmup_steps=1))
    trial = study.ask()
    out = tmp_path / "run"
    with pytest.raises(optuna.TrialPruned):
        train(tiny("cnn", epochs=4), out, callbacks=[PyTorchLightningPruningCallback(trial, "val_acc")])
    assert not (out / "result.json").exists()
    assert len((out / "curves.csv").read_text().splitlines()) == 2  # header + epoch 1
    run = wandb_run(out)
    assert run["exit_code"] == 0 and run["summary"]["pruned"] is True


def test_online_without_a_key_logs_offline_and_says_so_once(tmp_path, monkeypatch, capsys) -> None:
    import suite.run.tracking

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key anywhere
    monkeypatch.setattr(suite.run.tracking, "_warned", set())
    config = tiny("fc", "1", epochs=1, wandb_mode="online")
    first = train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    err = capsys.readouterr().err
    assert err.count("no W&B API key") == 1
    assert "offline-run-" in (tmp_path / "a" / "wandb_run.txt").read_text()
    assert wandb_run(tmp_path / "a")["id"] == first["wandb_run_id"]


def test_wandb_disabled_writes_the_result_and_no_wandb_run(tmp_path) -> None:
    out = tmp_path / "run"
    result = train(tiny("fc", "1", epochs=1, wandb_mode="disabled"), out)
    assert (out / "result.json").is_file() and result["wandb_run_id"] is None
    assert not (out / "wandb").exists() and not (out / "wandb_run.txt").exists()


def test_bad_input_found_while_preparing_writes_nothing(tmp_path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="^device="):
        train(tiny("cnn", device="cuda"), out)  # this machine has no CUDA
    assert not out.exists()


def test_a_run_is_quiet_and_leaves_global_state_as_it_found_it(tmp_path, capfd) -> None:
    levels = {n: logging.getLogger(n).level for n in ("lightning.pytorch", "lightning.fabric")}
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny("fc", "1", epochs=1), tmp_path / "run")
        train(tiny("fc", "1", epochs=1, lr=1e6), tmp_path / "diverged")
    messages = [str(w.message) for w in caught]
    for noise in ("LeafSpec", "log_every_n_steps", "training_step` returned `None", "litlogger"):
        assert not [m for m in messages if noise in m], noise
    out, err = capfd.readouterr()
    for noise in ("litlogger", "GPU available", "LeafSpec", "log_every_n_steps", "wandb:"):
        assert noise not in out + err, noise
    assert {n: logging.getLogger(n).level for n in levels} == levels
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.utils.deterministic.fill_uninitialized_memory == fill
