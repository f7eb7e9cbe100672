"""Mixed precision (RunConfig.amp): a bf16 run trains to a finite loss on CPU and says so in its
result; fp16, which needs CUDA's gradient scaler, is refused on CPU before anything is written."""

from __future__ import annotations

import json
import math
from typing import Any

import lightning as L
import pytest
import torch

from suite.run.config import AMP_MODES, ConfigError, RunConfig
from suite.run.train import _TRAINER_PRECISION, dataset_for, train

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("CI", "true")


class _SeenPrecision(L.Callback):
    """What the Trainer ran with, and whether the training step ran under CPU autocast."""

    def __init__(self) -> None:
        self.precision: str | None = None
        self.autocast: list[bool] = []
        self.eval_autocast: list[bool] = []  # validation and the test pass after the fit
        self.fit_evals = 0
        self.logits_dtype: torch.dtype | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.precision = trainer.precision
        model = pl_module.model

        def record(module: Any, inputs: Any, output: torch.Tensor) -> None:
            if module.training:
                self.autocast.append(torch.is_autocast_enabled("cpu"))
                self.logits_dtype = output.dtype
            else:
                self.eval_autocast.append(torch.is_autocast_enabled("cpu"))

        model.register_forward_hook(record)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.fit_evals = len(self.eval_autocast)  # the forwards after it are the test pass


def test_every_amp_mode_has_a_trainer_precision() -> None:
    assert set(_TRAINER_PRECISION) == set(AMP_MODES)


# logits: the head's matmul in bf16; a bnn head normalises its output, in fp32 (docs/amp.md)
@pytest.mark.parametrize(("model", "precision", "data", "logits"), [
    ("cnn", "2.32", {"dataset": "digits", "subset": 20}, torch.bfloat16),
    ("lm", "bnn", {"dataset": "stdlib-text", "subset": 64, "block_size": 32}, torch.float32),
])
def test_a_bf16_run_trains_to_a_finite_loss_and_records_amp(tmp_path, model, precision, data,
                                                            logits) -> None:
    config = RunConfig(model=model, precision=precision, width=0.5, epochs=2, amp="bf16",
                       device="cpu", **data)
    seen = _SeenPrecision()
    result = train(config, tmp_path / "run", callbacks=[seen], progress=False)
    assert seen.precision == "bf16-mixed"
    assert seen.autocast and all(seen.autocast)  # every training forward ran autocast
    # and so did every evaluation: 2 epochs' validation and the test pass after the fit
    assert seen.eval_autocast and all(seen.eval_autocast)
    test_batches = math.ceil(len(dataset_for(config).test_y) / 256)
    assert seen.fit_evals >= 2 and len(seen.eval_autocast) - seen.fit_evals == test_batches
    assert seen.logits_dtype == logits
    assert result["amp"] == "bf16"
    assert json.loads((tmp_path / "run" / "result.json").read_text())["amp"] == "bf16"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["amp"] == "bf16"
    assert not result["diverged"]
    for key in ("train_loss", "val_loss", "test_loss"):
        assert math.isfinite(result[key]), (key, result[key])


def test_fp16_on_cpu_is_refused_before_the_run_directory_exists(tmp_path) -> None:
    config = RunConfig(model="fc", dataset="digits", subset=5, epochs=1, amp="fp16", device="cpu")
    with pytest.raises(ConfigError, match=r"amp='fp16' needs a CUDA device.*use bf16 on CPU"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_amp_off_trains_in_fp32(tmp_path) -> None:
    config = RunConfig(model="fc", dataset="digits", subset=5, epochs=1, device="cpu",
                       wandb_mode="disabled")
    seen = _SeenPrecision()
    result = train(config, tmp_path / "run", callbacks=[seen], progress=False)
    assert seen.precision == "32-true" and not any(seen.autocast) and not any(seen.eval_autocast)
    assert seen.logits_dtype == torch.float32
    assert result["amp"] == "off"
