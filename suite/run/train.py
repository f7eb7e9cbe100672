"""One run: RunConfig -> Lightning fit -> RunResult, written to a run directory.

    run_dir/config.json      the RunConfig
    run_dir/model.json       the model spec (rebuilds the architecture)
    run_dir/model.safetensors the trained fp32 shadow weights: with model.json they reproduce the
                             quantised forward exactly (the grid values and steps derive from them)
    run_dir/model.bsw        the same model packed at its real bit size (``bitsweep unpack``)
    run_dir/curves.csv       one row per epoch
    run_dir/result.json      the RunResult, written last

The files are written into a fresh directory beside run_dir that takes its name at the end
(suite.run.outdir), so a finished run in run_dir stays whole until the new one has finished.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils.deterministic as determinism

from suite.data import DataSplits, DeviceLoader, load_dataset, load_request, make_augment
from suite.data.placement import Placement, choose_placement
from suite.models import model_from_spec, model_spec
from suite.models.names import is_user_model, model_task
from suite.models.user import UserModelError, check_outputs, user_spec
from suite.quant import QuantConfig, param_summary
from suite.run.config import ConfigError, RunConfig
from suite.run.cores import check_threads
from suite.run.devices import resolve_device
from suite.run.files import (
    CONFIG_NAME,
    CURVES_NAME,
    PACKED_NAME,
    RESULT_NAME,
    SPEC_NAME,
    WANDB_RUN_NAME,
    WEIGHTS_NAME,
)
from suite.run.layout import use_channels_last
from suite.run.outdir import check_out, staged
from suite.run.ranks import (
    RANK_VAR,
    check_shares,
    launch,
    rank_gpu,
    shard_of,
    trainer_devices,
)
from suite.run.result import provenance, run_result, write_result
from suite.run.stability import stability

_DATA_CACHE: OrderedDict[str, DataSplits] = OrderedDict()
_DATA_CACHE_SIZE = 4  # a long-lived worker reuses loaded datasets across trials


def dataset_for(config: RunConfig) -> DataSplits:
    """The run's data splits, loaded once per worker for every run that asks the same of them."""
    request = load_request(config)
    key = json.dumps(request, sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(**request)
        while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
            _DATA_CACHE.popitem(last=False)
    _DATA_CACHE.move_to_end(key)
    return _DATA_CACHE[key]


def quant_config(config: RunConfig) -> QuantConfig:
    return QuantConfig(resolution=config.precision, scale_rule=config.scale_rule,
                       per_channel=config.per_channel, quantize_bias=config.quantize_bias,
                       conv_norm=config.conv_norm)


def spec_for(config: RunConfig, data: DataSplits) -> dict[str, Any]:
    if is_user_model(config.model):
        from suite.models.registry import qconfig_to_dict

        return user_spec(config.model, qconfig=qconfig_to_dict(quant_config(config)),
                         input_shape=data.input_shape, num_classes=data.num_classes,
                         width=config.width, model_args=config.model_args, task=data.task,
                         layers=list(config.layers) or None, keep_fp32=config.keep_fp32)
    return model_spec(config.model, qconfig=quant_config(config), input_shape=data.input_shape,
                      num_classes=data.num_classes, width=config.width, depth=config.depth,
                      norm=config.norm, layers=config.layers, keep_fp32=config.keep_fp32)


def show_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _write_curves(rows: Sequence[dict[str, Any]], path: Path) -> None:
    from suite.run.files import CURVE_COLUMNS

    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _pack(model: torch.nn.Module, meta: dict[str, Any], path: Path) -> dict[str, Any]:
    from suite.pack.format import save_packed

    d = save_packed(model, path, meta).as_dict()
    return {"packed_bytes": d["file_bytes"], "packed_bits_per_weight": d["bits_per_weight"],
            "entropy_bits_per_weight": d["entropy_bits_per_weight"],
            "packed_compression": d["packed_compression"]}


@dataclass
class _Prepared:
    """Everything a run needs, built and validated before anything is written."""

    device: torch.device
    data: DataSplits
    spec: dict[str, Any]
    module: Any
    loaders: tuple[DeviceLoader, DeviceLoader, DeviceLoader]
    facts: dict[str, Any]  # what the run's set-up already tells: resolution, data, parameters
    summary: Any
    # how the run's auto choices came out (data_placement, memory_format): result fields that
    # override the config's "auto" there, as ``device`` does; W&B's config keeps it as given
    resolved: dict[str, Any]
    shard: tuple[int, int] = (0, 1)  # (rank, ranks) of a data-parallel run


def _prepare(config: RunConfig) -> _Prepared:
    """Resolve the device, load the data, build the model: any bad input fails here, as a
    ConfigError naming the field, before the run directory exists."""
    import lightning as L

    from suite.run.module import module_for

    try:
        device = resolve_device(config.device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"device={config.device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={config.device!r}: CUDA is not available on this machine")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise ConfigError(f"device={config.device!r}: MPS is not available on this machine")
    _check_amp(config.amp, device)
    shard = shard_of(config)
    if shard[1] > 1 and device.type == "cuda":
        device = rank_gpu(config, shard)
    if config.threads:
        check_threads(config.threads)
        torch.set_num_threads(config.threads)
    elif device.type == "cpu":
        # Leave a core to W&B's service process: on 2 cores, torch's spinning OpenMP threads and
        # wandb-core fighting for the same core made a step 10x slower here. The ranks of a
        # data-parallel run share the rest.
        torch.set_num_threads(max(1, ((os.cpu_count() or 2) - 1) // shard[1]))
    try:
        data = dataset_for(config)
    except (ValueError, OSError) as err:  # DatasetError is a ValueError
        raise ConfigError(f"dataset={config.dataset!r}{_args(config, 'dataset')}: {err}") from None
    _check_task(config, data)
    from suite.models.registry import ModelTooLarge, available_memory, check_fits

    free = available_memory(device)  # before the model or the data take any of it
    placement = choose_placement(config.data_placement, data.nbytes, device, free)
    try:
        spec = spec_for(config, data)
        check_fits(spec, placement.model_room(free))  # before module_for allocates the weights
    except ModelTooLarge as err:  # its message names the knob: width=..., depth=... or model=...
        raise ConfigError(str(err)) from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model={config.model!r}: {err}") from None
    L.seed_everything(config.seed, workers=False, verbose=False)
    check_shares(config, len(data.train_x))
    loaders = _loaders(config, data, device, placement, shard)
    try:
        module = module_for(data.task)(config.to_dict(), spec, len(loaders[0]), data.num_classes)
        if spec.get("kind") == "user":
            check_outputs(module.model, _sample(data), data.task, data.num_classes)
            check_fits(spec, placement.model_room(free), model=module.model)
    except UserModelError as err:  # the user's factory, import string or forward pass
        raise ConfigError(f"model={config.model!r}{_args(config, 'model')}: {err}") from None
    except ModelTooLarge as err:  # built on the host; refused before it takes the device's memory
        raise ConfigError(str(err)) from None
    channels_last = _set_layout(config, module.model, data, device, loaders)
    summary = param_summary(module.model)
    res = config.resolution
    facts = {"bits": res.bits, "levels": res.levels, "zero": res.zero, "task": data.task,
             "dataset_checksum": data.checksum, "params": summary.params,
             "params_quantized": summary.params_quantized}
    resolved = {"data_placement": placement.mode,
                "memory_format": "channels_last" if channels_last else "contiguous"}
    return _Prepared(device, data, spec, module, loaders, facts, summary, resolved, shard)


def _args(config: RunConfig, source: str) -> str:
    args = getattr(config, f"{source}_args")
    return f" ({source}_args={args!r})" if args else ""


def _check_task(config: RunConfig, data: DataSplits) -> None:
    """What RunConfig could not check before a user loader said what its data is."""
    wanted = model_task(config.model)
    if wanted is not None and wanted != data.task:
        kind = "a text corpus" if wanted == "text" else "an image dataset"
        raise ConfigError(f"dataset={config.dataset!r}: model {config.model!r} needs {kind}, but "
                          f"the loader gave {data.task} data")
    if data.task == "text" and config.augment != "none":
        raise ConfigError(f"augment={config.augment!r}: dataset {config.dataset!r} is text, which "
                          "takes no augmentation; use none")
    if data.task == "text" and config.memory_format == "channels_last":
        raise ConfigError(f"memory_format='channels_last': dataset {config.dataset!r} is text; "
                          "use auto or contiguous")


def check_model(config: RunConfig, data: DataSplits) -> None:
    """Raise ConfigError for what a run of ``config`` on ``data`` would refuse in its set-up
    about the user's code: a loader's data that does not fit the model, a user model that does
    not import, build, quantise or map a batch to logits of the right shape. A sweep asks in its
    parent, before any storage exists (suite.sweep.driver.check_datasets)."""
    _check_task(config, data)
    if not is_user_model(config.model):
        return
    try:
        spec = spec_for(config, data)
        check_outputs(model_from_spec(spec), _sample(data), data.task, data.num_classes)
    except (UserModelError, ValueError, TypeError) as err:
        raise ConfigError(f"model={config.model!r}{_args(config, 'model')}: {err}") from None


def _sample(data: DataSplits) -> torch.Tensor:
    """Two validation examples as the model sees them (uint8 images normalised)."""
    x = data.val_x[:2]
    if data.pixel_norm is not None:
        from suite.data.images import normalise_batch, pixel_stats

        x = normalise_batch(x, pixel_stats(*data.pixel_norm))
    return x


def _loaders(config: RunConfig, data: DataSplits, device: torch.device, placement: Placement,
             shard: tuple[int, int]) -> tuple[DeviceLoader, DeviceLoader, DeviceLoader]:
    """The train, val and test loaders, their data resident on ``device`` or streamed to it."""
    augment = make_augment(config.augment, data.image_kind)
    eval_batch = max(config.batch_size, 256)
    norm = data.pixel_norm
    loaders = (
        # a data-parallel rank takes its share of every training batch; every rank evaluates the
        # whole validation and test sets, so their numbers are the whole sets' without a reduction
        DeviceLoader(data.train_x, data.train_y, config.batch_size, shuffle=True, seed=config.seed,
                     augment=augment, shard=shard, pixel_norm=norm),
        DeviceLoader(data.val_x, data.val_y, eval_batch, shuffle=False, seed=config.seed,
                     pixel_norm=norm),
        DeviceLoader(data.test_x, data.test_y, eval_batch, shuffle=False, seed=config.seed,
                     pixel_norm=norm),
    )
    for loader in loaders:
        if placement.mode == "stream":
            loader.stream_to(device)
        else:
            loader.to(device)
    if shard[0] == 0 and (device.type == "cuda" or placement.requested != "auto"):
        # on a GPU the choice matters (and may be forced); on a CPU the data is in host memory
        # either way, and 468 runs of a study need not say so each
        print(f"bitsweep: {placement.describe()}", file=sys.stderr)
    return loaders


def _set_layout(config: RunConfig, model: torch.nn.Module, data: DataSplits, device: torch.device,
                loaders: Sequence[DeviceLoader]) -> bool:
    """Put the model and the loaders' batches in channels_last where suite.run.layout says it
    wins; returns whether it did."""
    channels_last = use_channels_last(config.memory_format, model, data.input_shape, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        for loader in loaders:
            loader.channels_last = True
    return channels_last


def _check_amp(amp: str, device: torch.device) -> None:
    """Refuse a mixed precision the device cannot run, before anything is created."""
    if amp == "fp16" and device.type != "cuda":
        # Lightning's 16-mixed needs CUDA's gradient scaler; CPU autocast to fp16 is refused there
        raise ConfigError(f"amp='fp16' needs a CUDA device (this run's is {device.type}); use bf16 on CPU")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"amp='bf16': {torch.cuda.get_device_name(device)} has no bf16; use fp16")


# Lightning Trainer precision of each RunConfig.amp
_TRAINER_PRECISION = {"off": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


# Known harmless warnings a run would otherwise print every time (messages, regexes).
_QUIET_WARNINGS = (
    (r".*isinstance\(treespec, LeafSpec\)", FutureWarning),  # torch 2.13 vs lightning's _pytree
    # on purpose: a diverged step returns None so it is neither back-propagated nor applied
    (r"`training_step` returned `None`", Warning),
)
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


@contextmanager
def _run_scope() -> Iterator[None]:
    """Global state a run touches, restored afterwards.

    Lightning's info lines (GPU/TPU available, the litlogger tip, "fit stopped") are dropped
    (warnings and errors still show); the known harmless warnings of ``_QUIET_WARNINGS`` are
    filtered for the run only; the deterministic-algorithms flags (Lightning sets them) and the
    SIGINT handler (Lightning ignores Ctrl-C after an interrupt) come back as they were."""
    import lightning  # noqa: F401 - its first import sets its loggers' levels: set ours after

    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    fill = determinism.fill_uninitialized_memory
    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    # Deterministic mode (Lightning's deterministic=True on CPU) also fills every fresh tensor
    # with NaN, a debugging aid that cannot change results but costs a memory pass per
    # allocation: 4% of a CNN epoch here, 8% under memory contention. Off for the run.
    determinism.fill_uninitialized_memory = False
    try:
        with warnings.catch_warnings():
            for message, category in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        determinism.fill_uninitialized_memory = fill
        if main_thread and sigint is not None:
            signal.signal(signal.SIGINT, sigint)


def train(config: RunConfig, out_dir: str | Path, *, callbacks: Sequence[Any] = (),
          wandb_dir: str | Path | None = None, run_name: str | None = None,
          progress: bool | None = None, overwrite: bool = True) -> dict[str, Any]:
    """Train one configuration and return its RunResult (also written to ``out_dir``).

    Bad input (unknown dataset files, a model that cannot take the data, an unavailable device,
    with ``overwrite=False`` an ``out_dir`` holding a finished run) raises ConfigError before
    anything is written. A diverged run (NaN/inf loss, or loss above ``config.diverge_loss``)
    stops early and returns normally with ``diverged`` set: that is a result. An exception or
    Ctrl-C during the fit finishes the W&B run (marked failed) and propagates (KeyboardInterrupt
    stays a KeyboardInterrupt); ``result.json`` is then absent, and a finished run that
    ``out_dir`` held is kept as it was. Extra Lightning ``callbacks`` (e.g. Optuna's pruning
    callback) are added.
    """
    check_out(Path(out_dir), overwrite=overwrite)
    if config.devices > 1 and RANK_VAR not in os.environ:
        return launch(train, config, out_dir, callbacks=callbacks, wandb_dir=wandb_dir, run_name=run_name,
                       progress=progress, overwrite=overwrite)
    with _run_scope():
        prep = _prepare(config)
        if prep.shard[0]:
            # a helper rank of a data-parallel run: its share of the fit, nothing written, no W&B
            # run; rank 0 records the epochs, tests, writes and returns the result
            _fit(config, prep, None, [], Path(out_dir), False)
            return {}
        with staged(Path(out_dir)) as stage:
            return _train_into(config, prep, stage, Path(out_dir), callbacks, wandb_dir, run_name,
                               progress)


def _train_into(config: RunConfig, prep: _Prepared, out: Path, final: Path,
                callbacks: Sequence[Any], wandb_dir: str | Path | None, run_name: str | None,
                progress: bool | None) -> dict[str, Any]:
    """The run's W&B run, fit and files, written into ``out``, which will be named ``final``."""
    from suite.run.callbacks import EpochRecorder, best_values
    from suite.run.tracking import finish, run_dir, start_run

    _write_run_files(config, prep, out)
    name = run_name or f"{config.model}/{config.dataset}/{config.precision}/s{config.seed}"
    run = start_run(mode=config.wandb_mode, project=config.wandb_project, group=config.group(),
                    name=name, save_dir=Path(wandb_dir) if wandb_dir else out,
                    final_dir=Path(wandb_dir) if wandb_dir else final,
                    config={**config.to_dict(), **prep.facts},
                    tags=[config.model, config.precision, config.dataset, *config.tags])
    result: dict[str, Any] = {}  # set once result.json is written
    summary: dict[str, Any] = {}
    exit_code = 1
    recorder = EpochRecorder(track_oscillation=config.track_oscillation)
    try:
        fit_seconds = _fit(config, prep, run, [recorder, *callbacks], out, progress)
        result = _finish(config, prep, recorder.rows, fit_seconds, run, out)
        return result
    except KeyboardInterrupt:
        exit_code = 255
        raise
    except Exception as err:
        if type(err).__name__ == "TrialPruned":  # Optuna stopped it: an outcome, not a crash
            exit_code = 0
            summary = {"pruned": True, "epochs_run": len(recorder.rows)}
        raise
    finally:
        summary.update(best_values(recorder.rows))
        if result:
            where = finish(run, {**result, **summary})
        else:
            # no result.json: keep the epochs that did finish (a pruned trial's curves
            # matter to the report) and close the W&B run as failed (or pruned)
            where = run_dir(run)
            if recorder.rows:
                with suppress(OSError):
                    _write_curves(recorder.rows, out / CURVES_NAME)
            with suppress(Exception):  # never mask the error that stopped the run
                finish(run, summary, exit_code=exit_code)
        if where:
            (out / WANDB_RUN_NAME).write_text(_renamed(Path(where), out, final) + "\n")


def _write_run_files(config: RunConfig, prep: _Prepared, out: Path) -> None:
    (out / CONFIG_NAME).write_text(json.dumps(config.to_file_dict(), indent=1))
    (out / SPEC_NAME).write_text(json.dumps(prep.spec, indent=1))


def _renamed(path: Path, stage: Path, final: Path) -> str:
    """Where ``path``, written under the staged run directory, lies once it is named ``final``."""
    try:
        return str(final / path.relative_to(stage))
    except ValueError:  # elsewhere (--wandb-dir): it does not move
        return str(path)


def _fit(config: RunConfig, prep: _Prepared, run: Any, callbacks: list[Any], out: Path,
         progress: bool | None) -> float:
    """The Lightning fit; returns its wall time."""
    from lightning.fabric.utilities import registry

    from suite.run.tracking import cached_scan, make_logger

    train_loader, val_loader, _ = prep.loaders
    logger = make_logger(run)
    with cached_scan(registry, "entry_points"):  # Lightning's external-callback lookup
        trainer = _trainer(config, prep.device, logger, callbacks, out, progress,
                           len(train_loader))
    start = time.perf_counter()
    try:
        trainer.fit(prep.module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    except SystemExit:
        # Lightning turns Ctrl-C during fit into sys.exit(1); callers (a sweep worker, the CLI)
        # need to see the interrupt itself.
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    return time.perf_counter() - start


def _trainer(config: RunConfig, device: torch.device, logger: Any, callbacks: list[Any], out: Path,
             progress: bool | None, steps_per_epoch: int) -> Any:
    import lightning as L

    return L.Trainer(
        accelerator={"cpu": "cpu", "cuda": "gpu", "mps": "mps"}[device.type],
        **trainer_devices(config, device),
        max_epochs=config.epochs, logger=logger if logger is not None else False,
        precision=_TRAINER_PRECISION[config.amp],
        callbacks=callbacks, enable_checkpointing=False,
        enable_progress_bar=show_progress() if progress is None else progress,
        enable_model_summary=False, num_sanity_val_steps=0,
        # metrics are logged per epoch; this only keeps Lightning from warning that an
        # epoch is shorter than its logging interval
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        # no gradient_clip_val: the module steps the optimiser itself and clips (config.grad_clip)
        deterministic=device.type == "cpu",
        default_root_dir=str(out),
    )


def _finish(config: RunConfig, prep: _Prepared, rows: Sequence[dict[str, Any]], fit_seconds: float,
            run: Any, out: Path) -> dict[str, Any]:
    """Test (unless diverged), write curves, weights, the packed model and result.json; returns
    the RunResult as stored."""
    measured = _measure(config, prep, rows, fit_seconds)
    measured["wandb_run_id"] = getattr(run, "id", None)
    measured["wandb_group"] = config.group()
    _write_curves(rows, out / CURVES_NAME)
    measured.update(_write_artifacts(prep.module, prep.spec, config, out))
    record = run_result(config.to_dict(), measured, text=prep.data.task == "text")
    write_result(record, out / RESULT_NAME)
    return json.loads((out / RESULT_NAME).read_text())


def _measure(config: RunConfig, prep: _Prepared, rows: Sequence[dict[str, Any]],
             fit_seconds: float) -> dict[str, Any]:
    """What a finished fit measured (the test pass only when the run did not diverge)."""
    module = prep.module
    last = rows[-1] if rows else {}
    diverged_epoch = module.diverged_epoch
    if diverged_epoch is None:
        diverged_epoch = next((r["epoch"] for r in rows if r.get("val_loss") is not None
                               and not (math.isfinite(r["val_loss"])
                                        and r["val_loss"] <= config.diverge_loss)), None)
    # the module's own pass: trainer.test's numbers and logger record without its loop set-up
    test = module.evaluate(prep.loaders[2], "test") if diverged_epoch is None else {}
    measured: dict[str, Any] = {
        **prep.facts,
        "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
        "val_loss": last.get("val_loss"), "val_acc": last.get("val_acc"),
        "test_loss": test.get("test_loss"), "test_acc": test.get("test_acc"),
        "top_class_share": module.top_class_share("test") if test else None,
        "diverged": diverged_epoch is not None, "diverged_epoch": diverged_epoch,
        "epochs_run": len(rows),
        **stability(rows),
        **{k: v for k, v in prep.summary.as_dict().items() if k != "params"},
        "fit_seconds": fit_seconds,
        **prep.resolved,
        **provenance(str(prep.device)),
    }
    if prep.data.task == "text":
        measured["val_ppl"] = last.get("val_ppl")
        measured["test_ppl"] = test.get("test_ppl")
    return measured


def _write_artifacts(module: Any, spec: dict[str, Any], config: RunConfig,
                     out: Path) -> dict[str, Any]:
    """The trained weights (safetensors: no pickle) and the packed file; returns the packed
    file's sizes for the result."""
    from suite.pack.weights import save_weights

    module.model.cpu().to(memory_format=torch.contiguous_format)  # packing reads plain tensors
    state = {k: v.contiguous() for k, v in module.model.state_dict().items()}
    save_weights(state, out / WEIGHTS_NAME)
    packed = _pack(module.model, {"model_spec": spec, "config": config.to_file_dict()},
                   out / PACKED_NAME)
    packed["packed_ratio"] = packed["packed_bytes"] / (out / WEIGHTS_NAME).stat().st_size
    return packed


def load_trained(run_dir: str | Path) -> torch.nn.Module:
    """Rebuild a trained model from its run directory (no pickle)."""
    from safetensors.torch import load_file

    run = Path(run_dir)
    model = model_from_spec(json.loads((run / SPEC_NAME).read_text()))
    model.load_state_dict(load_file(str(run / WEIGHTS_NAME)))
    return model.eval()
