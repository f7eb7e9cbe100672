"""devices: N — one run data-parallel on N CPU processes (Lightning's DDP over gloo).

A model without batch statistics sees the same global batches on 2 ranks of batch 32 as on one
process of batch 64, so the runs must agree up to float32 summation order: the loss sums and the
gradient are added per rank and then across ranks instead of in one pass. Observed differences
are ~2e-7 (losses, relative) and ~3e-7 (weights, absolute) after 8 Adam steps; the tolerances
below (1e-5) leave a 30x margin yet catch any real difference (a rank training on the wrong
examples, or a loss that is one rank's instead of the global batch's, is off by 1e-3 or more).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from suite.data import DeviceLoader
from suite.run.config import ConfigError, RunConfig
from suite.run.tracking import read_offline_run
from suite.run.train import train

FC = {"model": "fc", "dataset": "digits", "norm": "none", "precision": "2.32", "epochs": 2,
      "batch_size": 64, "subset": 20, "device": "cpu", "threads": 1}
TOLERANCE = 1e-5


def test_batch_size_must_split_evenly() -> None:
    with pytest.raises(ConfigError, match=r"batch_size=65 is not divisible by devices=2"):
        RunConfig(**{**FC, "batch_size": 65, "devices": 2})
    with pytest.raises(ConfigError, match=r"devices=0: must be >= 1"):
        RunConfig(**{**FC, "devices": 0})


@pytest.mark.parametrize("augment", [None, "standard"])
def test_shards_make_up_the_global_batches(augment: str | None) -> None:
    from suite.data import make_augment

    x, y = torch.randn(70, 1, 8, 8), torch.arange(70)

    def batches(shard: tuple[int, int], batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        aug = make_augment(augment, "digit") if augment else None
        return list(DeviceLoader(x, y, batch_size, shuffle=True, seed=3, augment=aug, shard=shard))

    whole = batches((0, 1), 16)
    parts = [batches((rank, 3), 16) for rank in range(3)]
    assert [len(p) for p in parts] == [len(whole)] * 3
    for b, (xb, yb) in enumerate(whole):  # 16 = 5 + 5 + 6, the last batch's 6 = 2 + 2 + 2
        assert torch.equal(torch.cat([p[b][1] for p in parts]), yb)
        assert torch.equal(torch.cat([p[b][0] for p in parts]), xb)



@pytest.mark.slow
def test_two_processes_make_one_run_equal_to_one_process(tmp_path: Path) -> None:
    config = RunConfig(**FC, devices=2, wandb_mode="offline")
    result = train(config, tmp_path / "ddp", wandb_dir=tmp_path / "wb", progress=False)
    single = train(RunConfig(**FC, wandb_mode="disabled"), tmp_path / "one", progress=False)

    # one run: one result (returned here and written), one W&B run, one packed model
    assert json.loads((tmp_path / "ddp" / "result.json").read_text()) == result
    assert result["devices"] == 2 and result["epochs_run"] == 2
    assert (tmp_path / "ddp" / "model.bsw").stat().st_size > 0
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logged = read_offline_run(runs[0], wait=10)
    assert logged["config"]["devices"] == 2 and logged["exit_code"] == 0
    assert [row["epoch"] for row in logged["history"] if "train_loss" in row] == [1, 2]
    assert (tmp_path / "ddp" / "wandb_run.txt").read_text().strip() == str(runs[0])

    for key in ("train_loss", "val_loss", "val_acc", "train_acc"):
        assert result[key] == pytest.approx(single[key], rel=TOLERANCE), key
    ours, theirs = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("ddp", "one"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=TOLERANCE, msg=name)


@pytest.mark.slow
def test_a_rank_error_reaches_the_caller(tmp_path: Path) -> None:
    # 10 examples in batches of 8: the last batch's 2 cannot give each of 4 ranks one
    config = RunConfig(**{**FC, "subset": 1, "batch_size": 8, "devices": 4, "epochs": 1},
                       wandb_mode="disabled")
    with pytest.raises(ConfigError, match=r"last training batch holds 2 example"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "result.json").exists()


def test_batch_norm_is_synchronised_where_torch_can() -> None:
    from suite.run.ranks import trainer_devices

    config = RunConfig(**{**FC, "devices": 2})
    assert trainer_devices(config, torch.device("cuda", 0))["sync_batchnorm"] is True
    assert trainer_devices(config, torch.device("cpu"))["sync_batchnorm"] is False  # GPU-only op
    assert "sync_batchnorm" not in trainer_devices(RunConfig(**FC), torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_a_batch_norm_cnn_on_two_gpus_matches_one(tmp_path: Path) -> None:
    cnn = {**FC, "model": "cnn", "norm": "batch", "device": "cuda"}
    two = train(RunConfig(**cnn, devices=2, wandb_mode="disabled"), tmp_path / "two", progress=False)
    one = train(RunConfig(**cnn, wandb_mode="disabled"), tmp_path / "one", progress=False)
    for key in ("train_loss", "val_loss", "val_acc"):
        assert two[key] == pytest.approx(one[key], rel=1e-4), key  # cuDNN sums in its own order
