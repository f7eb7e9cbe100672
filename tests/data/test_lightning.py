"""DeviceLoader as Lightning's train_dataloaders: a plain iterable, restarted every epoch."""

from __future__ import annotations

import pytest
import torch

from suite.data import DeviceLoader, load_dataset, make_augment

L = pytest.importorskip("lightning")


class Probe(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, _):
        x, y = batch
        self.seen.setdefault(self.current_epoch, []).extend(y.tolist())
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_runs_whole_distinct_epochs():
    d = load_dataset("digits")
    loader = DeviceLoader(d.train_x, d.train_y, 128, shuffle=True, seed=0,
                          augment=make_augment("standard", d.image_kind))  # fmt: skip
    probe = Probe()
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(probe, train_dataloaders=loader)
    assert sorted(probe.seen) == [0, 1, 2]
    for labels in probe.seen.values():
        assert sorted(labels) == sorted(d.train_y.tolist())  # every example once per epoch
    assert probe.seen[0] != probe.seen[1] != probe.seen[2]
    # Lightning's iterability probe did not use up an epoch: fit's epoch e is loader epoch e.
    replay = DeviceLoader(d.train_x, d.train_y, 128, shuffle=True, seed=0)
    assert [[i for _, yb in replay for i in yb.tolist()] for _ in range(3)] == [
        probe.seen[e] for e in range(3)
    ]
    assert loader.state_dict() == {"epoch": 3}
