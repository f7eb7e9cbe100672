"""RunResult.top_class_share: what share of the test set gets the class the model predicts most,
counted in the module's test pass (a run that predicts one class for everything has collapsed)."""

from __future__ import annotations

import pytest
import torch

from suite.run.config import RunConfig
from suite.run.module import _EpochSums
from suite.run.train import dataset_for, load_trained, train

pytestmark = pytest.mark.slow


def test_epoch_sums_count_predicted_classes_only_when_asked():
    sums = _EpochSums(torch.device("cpu"))
    logits = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.5]])
    target = torch.tensor([1, 0, 0, 2])
    sums.add(torch.tensor(1.0), logits, target, 4, tokens=False, count_classes=True)
    sums.add(torch.tensor(1.0), logits[:2], target[:2], 2, tokens=False, count_classes=True)
    assert sums.top_class_share() == pytest.approx(5 / 6)  # class 1: 3 + 2 of 6 predictions
    plain = _EpochSums(torch.device("cpu"))
    plain.add(torch.tensor(1.0), logits, target, 4, tokens=False)
    assert plain.top_class_share() is None


def test_a_run_records_the_share_of_its_most_predicted_test_class(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = RunConfig(model="fc", dataset="digits", subset=20, epochs=2, width=0.5,
                       precision="2.32", wandb_mode="disabled")
    result = train(config, tmp_path / "run")
    data = dataset_for(config)
    with torch.no_grad():
        predicted = load_trained(tmp_path / "run")(data.test_x).argmax(-1)
    share = torch.bincount(predicted).max().item() / len(predicted)
    assert result["top_class_share"] == pytest.approx(share, abs=1e-9)
    assert 0 < result["top_class_share"] <= 1
