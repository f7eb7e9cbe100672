"""BitsweepQAT on a LightningModule written the way a user writes one, trained by a plain Trainer."""

from __future__ import annotations

import csv
import math
import os

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from suite import BitsweepQAT
from suite.cli import main
from suite.pack.format import read_packed
from suite.quant import QuantMixin

os.environ.setdefault("WANDB_MODE", "disabled")


class DigitsNet(L.LightningModule):
    """A user's module: its own network, training_step and optimiser; nothing from bitsweep."""

    def __init__(self, lr: float = 1e-2) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
            nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def _digits() -> TensorDataset:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    return TensorDataset(x[:512], torch.tensor(y[:512]))


def _trainer(tmp_path, callback: BitsweepQAT, epochs: int = 2, **kwargs) -> L.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1,
                     logger=CSVLogger(tmp_path, name="user"), callbacks=[callback],
                     enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                     **kwargs)


def _fit(tmp_path, callback: BitsweepQAT, epochs: int = 2, **kwargs) -> tuple[L.Trainer, DigitsNet]:
    torch.manual_seed(0)
    module = DigitsNet()
    trainer = _trainer(tmp_path, callback, epochs, **kwargs)
    trainer.fit(module, DataLoader(_digits(), batch_size=64, shuffle=True))
    return trainer, module


def _metrics(trainer: L.Trainer) -> list[dict[str, str]]:
    with open(os.path.join(trainer.logger.log_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_two_bit_fit_quantises_logs_curves_and_packs(tmp_path, capsys) -> None:
    callback = BitsweepQAT("2", track_oscillation=True)
    trainer, module = _fit(tmp_path, callback)

    # every weight layer was swapped, and its forward weights sit on the 4-level grid
    quant = [m for m in module.net if isinstance(m, QuantMixin)]
    assert len(quant) == 3
    for layer in quant:
        qt = layer.quantized_tensors()["weight"]
        w = layer.quantized_weight().detach()
        assert torch.equal(w, qt.values())
        levels = w / qt.scale + 1.5  # (i - (N-1)/2) * s with N = 4
        assert torch.allclose(levels, levels.round(), atol=1e-4)
        assert set(levels.round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    # the optimiser configured by the module trains the quantised layers' own parameters
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert {id(layer.weight) for layer in quant} <= optimised

    # one row of curves per epoch, in the logger's metrics.csv and in callback.rows
    rows = [r for r in _metrics(trainer) if r.get("flip_rate")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert [c["epoch"] for c in callback.rows] == [1, 2]
    for logged, kept in zip(rows, callback.rows):
        for name in ("flip_rate", "grad_norm", "oscillation"):
            assert math.isclose(float(logged[name]), kept[name], rel_tol=1e-6)
        assert 0.0 < kept["flip_rate"] <= 1.0 and kept["grad_norm"] > 0
        assert 0.0 <= kept["oscillation"] <= 1.0
    assert "flip_rate" in trainer.callback_metrics

    # the packed model: written at fit end in the log directory, ~2 bits per weight, and it
    # rebuilds into a fresh module that gives the trained module's outputs
    path = callback.packed_path
    assert path == tmp_path / "user" / "version_0" / "model.bsw" and path.is_file()
    stats = read_packed(path).stats()
    assert stats.params_quantized == sum(layer.weight.numel() for layer in quant)
    assert stats.bits_per_weight <= 1.01 * math.log2(4)
    rebuilt = BitsweepQAT.load(path, DigitsNet())
    x = _digits().tensors[0][:100]
    module.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), module(x), atol=1e-5)
    assert all(m.frozen for m in rebuilt.modules() if isinstance(m, QuantMixin))
    # `bitsweep unpack` has no architecture to build it from: it says how to load it instead
    assert main(["unpack", str(path)]) == 2
    assert "BitsweepQAT.load" in capsys.readouterr().err


def test_learned_steps_are_in_the_modules_optimiser_and_train(tmp_path) -> None:
    # setup runs before configure_optimizers: a learned rule's grid steps, created by the
    # quantisation, are parameters the user's optimiser updates
    callback = BitsweepQAT("1.58", scale_rule="lsq", keep_fp32="ends", packed=None)
    trainer, module = _fit(tmp_path, callback, epochs=1)
    quant = [m for m in module.net if isinstance(m, QuantMixin)]
    steps = [m.step for m in quant if m.step is not None]
    assert len(steps) == 1  # ends: first and last layers kept at fp32, no step
    assert [m.qconfig.resolution.label for m in quant] == ["fp32", "1.58", "fp32"]
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert id(steps[0]) in optimised
    assert trainer.optimizers[0].state[steps[0]]["step"] > 0
    assert callback.packed_path is None and not list(tmp_path.rglob("*.bsw"))


def test_a_network_attribute_is_quantised_and_packed_alone(tmp_path) -> None:
    callback = BitsweepQAT("1", target="net", packed=str(tmp_path / "net.bsw"))
    _, module = _fit(tmp_path, callback, epochs=1)
    names = [e["name"] for e in read_packed(tmp_path / "net.bsw").entries]
    assert "0.weight" in names and not any(n.startswith("net.") for n in names)
    rebuilt = BitsweepQAT.load(tmp_path / "net.bsw", DigitsNet().net)
    x = _digits().tensors[0][:50]
    module.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), module.net(x), atol=1e-5)


def test_a_checkpoint_of_the_fit_is_evaluated_by_a_fresh_module(tmp_path) -> None:
    # setup also runs before a checkpoint is restored: a fresh module gets the same layers
    # (learned steps included), so validate(ckpt_path=...) loads the quantised state strictly
    settings = {"resolution": "2.32", "scale_rule": "lsq", "packed": None}
    trainer, module = _fit(tmp_path, BitsweepQAT(**settings), epochs=1, enable_checkpointing=True)
    ckpt = trainer.checkpoint_callback.best_model_path
    assert ckpt and any(k.endswith(".step") for k in torch.load(ckpt, weights_only=True)["state_dict"])
    data = DataLoader(_digits(), batch_size=600)
    fresh = _trainer(tmp_path, BitsweepQAT(**settings))
    (metrics,) = fresh.validate(DigitsNet(), data, ckpt_path=ckpt, verbose=False)
    x, y = _digits().tensors
    module.eval()
    with torch.no_grad():
        expected = F.cross_entropy(module(x), y).item()
    assert metrics["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_bad_settings_fail_before_training() -> None:
    with pytest.raises(ValueError, match="keep_fp32"):
        BitsweepQAT("2", keep_fp32="middle")
    with pytest.raises(ValueError, match="scale rule"):
        BitsweepQAT("2", scale_rule="nope")
    with pytest.raises(ValueError):
        BitsweepQAT("0.3")


def test_a_module_with_nothing_to_quantise_is_refused_at_setup(tmp_path) -> None:
    class Empty(DigitsNet):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Flatten()  # no weight layer at all
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :10] * self.scale

    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, callbacks=[BitsweepQAT("2")],
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    with pytest.raises(ValueError, match="no layer to quantise"):
        trainer.fit(Empty(), DataLoader(_digits(), batch_size=64))
