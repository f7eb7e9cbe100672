"""One run: RunConfig -> Lightning fit -> RunResult, written to a run directory.

    run_dir/config.json      the RunConfig
    run_dir/model.json       the model spec (rebuilds the architecture)
    run_dir/model.safetensors the trained fp32 shadow weights: with model.json they reproduce the
                             quantised forward exactly (the grid values and steps derive from them)
    run_dir/model.bsw        the same model packed at its real bit size (``bitsweep unpack``)
    run_dir/curves.csv       one row per epoch
    run_dir/result.json      the RunResult
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from suite.config import RunConfig
from suite.data import DataSplits, DeviceLoader, load_dataset, make_augment
from suite.models import model_from_spec, model_spec
from suite.quant import QuantConfig, param_summary
from suite.result import provenance, write_result
from suite.stability import stability

_DATA_CACHE: OrderedDict[tuple, DataSplits] = OrderedDict()
_DATA_CACHE_SIZE = 4  # a long-lived worker reuses loaded datasets across trials


def dataset_for(config: RunConfig) -> DataSplits:
    key = (config.dataset, config.subset, config.seed if config.subset else 0,
           config.block_size, config.data_dir)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(config.dataset, data_dir=config.data_dir,
                                        subset=config.subset, seed=key[2],
                                        block_size=config.block_size)
        while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
            _DATA_CACHE.popitem(last=False)
    _DATA_CACHE.move_to_end(key)
    return _DATA_CACHE[key]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def quant_config(config: RunConfig) -> QuantConfig:
    return QuantConfig(resolution=config.precision, scale_rule=config.scale_rule,
                       per_channel=config.per_channel, quantize_bias=config.quantize_bias,
                       conv_norm=config.conv_norm)


def spec_for(config: RunConfig, data: DataSplits) -> dict[str, Any]:
    return model_spec(config.model, qconfig=quant_config(config), input_shape=data.input_shape,
                      num_classes=data.num_classes, width=config.width, depth=config.depth,
                      norm=config.norm)


def show_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _write_curves(rows: Sequence[dict[str, Any]], path: Path) -> None:
    from suite.callbacks import CURVE_COLUMNS

    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _pack(model: torch.nn.Module, meta: dict[str, Any], path: Path) -> dict[str, Any]:
    try:
        from suite.quant.pack import save_packed
    except ImportError:  # packing lands separately; a run without it still has a result
        return {}
    stats = save_packed(model, path, meta)
    d = stats.as_dict()
    return {"packed_bytes": d["file_bytes"], "packed_bits_per_weight": d["bits_per_weight"],
            "entropy_bits_per_weight": d["entropy_bits_per_weight"],
            "packed_compression": d["compression"]}


def train(config: RunConfig, out_dir: str | Path, *, callbacks: Sequence[Any] = (),
          wandb_dir: str | Path | None = None, run_name: str | None = None,
          progress: bool | None = None) -> dict[str, Any]:
    """Train one configuration and return its RunResult (also written to ``out_dir``).

    A diverged run (NaN/inf loss, or loss above ``config.diverge_loss``) stops early and returns
    normally with ``diverged`` set: that is a result. Extra Lightning ``callbacks`` (e.g. Optuna's
    pruning callback) are added to the trainer.
    """
    import lightning as L

    from suite.callbacks import EpochRecorder
    from suite.lit import module_for
    from suite.tracking import finish, make_logger

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    elif device.type == "cpu":
        # Leave a core to W&B's service process: on 2 cores, torch's spinning OpenMP threads and
        # wandb-core fighting for the same core made a step 10x slower here.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    L.seed_everything(config.seed, workers=False, verbose=False)

    data = dataset_for(config)
    spec = spec_for(config, data)
    (out / "model.json").write_text(json.dumps(spec, indent=1))
    augment = make_augment(config.augment, data.image_kind)
    train_loader = DeviceLoader(data.train_x, data.train_y, config.batch_size, shuffle=True,
                                seed=config.seed, augment=augment).to(device)
    val_loader = DeviceLoader(data.val_x, data.val_y, max(config.batch_size, 256),
                              shuffle=False, seed=config.seed).to(device)
    test_loader = DeviceLoader(data.test_x, data.test_y, max(config.batch_size, 256),
                               shuffle=False, seed=config.seed).to(device)

    module = module_for(data.task)(config.to_dict(), spec, len(train_loader), data.num_classes)
    summary = param_summary(module.model)
    res = config.resolution
    flat = {**config.to_dict(), "bits": res.bits, "levels": res.levels,
            "zero": res.zero if res.quantized else None, "task": data.task,
            "dataset_checksum": data.checksum, "params": summary.params,
            "params_quantized": summary.params_quantized}
    name = run_name or f"{config.group()}/s{config.seed}"
    logger = make_logger(mode=config.wandb_mode, project=config.wandb_project,
                         group=config.group(), name=name,
                         save_dir=Path(wandb_dir) if wandb_dir else out,
                         config=flat, tags=[config.model, config.precision, config.dataset])
    if logger is not None:
        logger.experiment  # noqa: B018 - start W&B now so fit_seconds measures training only
    recorder = EpochRecorder()
    accelerator = {"cpu": "cpu", "cuda": "gpu", "mps": "mps"}[device.type]
    trainer = L.Trainer(
        accelerator=accelerator, devices=[device.index or 0] if device.type == "cuda" else 1,
        max_epochs=config.epochs, logger=logger if logger is not None else False,
        callbacks=[recorder, *callbacks], enable_checkpointing=False,
        enable_progress_bar=show_progress() if progress is None else progress,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=50,
        gradient_clip_val=config.grad_clip, deterministic=device.type == "cpu",
    )
    failed = True
    try:
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
        fit_seconds = time.perf_counter() - start
        rows = recorder.rows
        last = rows[-1] if rows else {}
        diverged_epoch = module.diverged_epoch
        if diverged_epoch is None:
            bad = next((r["epoch"] for r in rows if r.get("val_loss") is not None
                        and not (math.isfinite(r["val_loss"])
                                 and r["val_loss"] <= config.diverge_loss)), None)
            diverged_epoch = bad
        test: dict[str, float] = {}
        if diverged_epoch is None:
            tested = trainer.test(module, dataloaders=test_loader, verbose=False)
            test = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
        result: dict[str, Any] = {
            **flat,
            "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
            "val_loss": last.get("val_loss"), "val_acc": last.get("val_acc"),
            "test_loss": test.get("test_loss"), "test_acc": test.get("test_acc"),
            "diverged": diverged_epoch is not None, "diverged_epoch": diverged_epoch,
            "epochs_run": len(rows),
            **stability(rows),
            **{k: v for k, v in summary.as_dict().items() if k != "params"},
            "fit_seconds": fit_seconds,
            **provenance(str(device)),
        }
        if data.task == "text":
            result["val_ppl"] = last.get("val_ppl")
            result["test_ppl"] = test.get("test_ppl")
        _write_curves(rows, out / "curves.csv")
        module.model.cpu()
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in module.model.state_dict().items()}
        save_file(state, str(out / "model.safetensors"))
        packed = _pack(module.model, {"model_spec": spec, "config": config.to_dict()},
                       out / "model.bsw")
        if packed:
            packed["packed_ratio"] = packed["packed_bytes"] / (out / "model.safetensors").stat().st_size
        result.update(packed)
        write_result(result, out / "result.json")
        failed = False
        return json.loads((out / "result.json").read_text())
    finally:
        run_dir = finish(logger, json.loads((out / "result.json").read_text())
                         if not failed else {}, failed=failed)
        if run_dir:
            (out / "wandb_run.txt").write_text(run_dir + "\n")


def load_trained(run_dir: str | Path) -> torch.nn.Module:
    """Rebuild a trained model from its run directory (no pickle)."""
    from safetensors.torch import load_file

    run = Path(run_dir)
    model = model_from_spec(json.loads((run / "model.json").read_text()))
    model.load_state_dict(load_file(str(run / "model.safetensors")))
    return model.eval()
