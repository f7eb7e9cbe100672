"""Synthetic-but-plausible sweep results, for tests, the benchmark and trying the report out.

The generator follows the papers' qualitative picture so every figure has something to show:
accuracy gaps to fp32 shrink with bits and with model size; small low-resolution models converge
more slowly; augmentation adds validation spikes and divergences at low resolution, mostly on
zero-free grids; bnn sits a couple of points under fp32. The numbers are invented: nothing here is
a measurement. ``lr_stress_records`` builds the other kind of study, a learning-rate stress sweep
whose frontier (the multiple from which each run diverges) the caller sets exactly.

It ships in the package, not under tests/, because bench/bench_report.py builds its 10,000-run
study from it and a user can try the report without training anything; no report path calls it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from suite.report.frame import precision_bits, precision_levels

# name: task, dataset, fp32 accuracy at the reference width, reference width, params(width)
MODELS: dict[str, dict[str, Any]] = {
    "fc": {"task": "image", "dataset": "cifar10", "acc": 0.54, "ref": 256,
           "params": lambda w: 3072 * w + w * w + 10 * w + 2 * w + 10},
    "cnn": {"task": "image", "dataset": "cifar10", "acc": 0.80, "ref": 32,
            "params": lambda w: 27 * w + 18 * w * w + 72 * w * w + 40 * w + 7 * w + 10},
    "vit": {"task": "image", "dataset": "cifar10", "acc": 0.71, "ref": 64,
            "params": lambda w: 4 * 12 * w * w + 48 * w + 10 * w},
    "lm": {"task": "text", "dataset": "chars", "acc": 0.58, "ref": 128,
           "params": lambda w: 2 * 96 * w + 4 * 12 * w * w},
}
DEFAULT_PRECISIONS = ("fp32", "bnn", "1", "1.58", "2", "2.32", "3", "3.17", "4", "4.09")


def _run(
    rng: np.random.Generator, model: str, precision: str, width: int, augment: str, epochs: int,
    seed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    m = MODELS[model]
    params = int(m["params"](width))
    size = m["params"](m["ref"]) / params  # > 1 for models smaller than the reference
    bits = precision_bits(precision)
    levels = precision_levels(precision)
    quant = precision != "fp32"
    zero = levels is not None and precision != "bnn" and levels % 2 == 1
    # bnn's per-example normalisation is what keeps it stable (arXiv 2509.07025)
    low = quant and bits < 2.5 and precision != "bnn"
    aug = augment != "none"

    acc_inf = m["acc"] + 0.035 * math.log2(1 / size) / 2 + (0.02 if aug else 0.0)
    if precision == "bnn":
        gap = 0.02 * size**0.3
    elif quant:
        gap = 0.09 * math.exp(-1.4 * (bits - 1)) * size**0.35 * (0.8 if zero else 1.0)
    else:
        gap = 0.0
    acc_inf = min(acc_inf - gap + rng.normal(0, 0.004), 0.97)
    tau = 2.0 * (1 + (3.0 * math.exp(-(bits - 1)) * size**0.6 if quant else 0.0))
    noise = 0.004 + (0.012 if low and aug else 0.0) * (1.8 if not zero else 0.5)
    p_spike = 0.01 + (0.12 * (1.0 if not zero else 0.25) if low and aug else 0.0)
    p_div = (0.01 if low else 0.0) + (0.12 if low and aug and not zero else 0.0)

    e = np.arange(1, epochs + 1)
    acc = acc_inf * (1 - np.exp(-e / tau)) + 0.1 * np.exp(-e / tau) + rng.normal(0, noise, epochs)
    spikes = rng.random(epochs) < p_spike
    acc = np.where(spikes, acc - rng.uniform(0.05, 0.15, epochs), acc)
    acc = np.clip(acc, 0.05, 0.99)
    val_loss = 2.3 * (1 - acc) + 0.35 + rng.normal(0, 0.01, epochs)
    train_loss = val_loss - 0.08 * e / epochs + rng.normal(0, 0.01, epochs)
    train_acc = np.clip(acc + 0.03 * e / epochs, 0, 1)
    diverged = bool(rng.random() < p_div) and epochs >= 3
    div_epoch = int(rng.integers(2, epochs + 1)) if diverged else None
    if diverged:
        after = e >= div_epoch
        for arr in (acc, val_loss, train_loss, train_acc):
            arr[after] = np.nan
    flip = 0.05 * np.exp(-e / 3) if quant else np.full(epochs, np.nan)
    lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * (e - 1) / epochs))
    grad = 1.0 / np.sqrt(e) + rng.gamma(2, 0.05, epochs)
    text = m["task"] == "text"
    curves = []
    for i in range(epochs):
        row = {"epoch": int(e[i]), "train_loss": float(train_loss[i]),
               "train_acc": float(train_acc[i]), "val_loss": float(val_loss[i]),
               "val_acc": float(acc[i]), "grad_norm": float(grad[i]),
               "flip_rate": None if not quant else float(flip[i]), "lr": float(lr[i])}
        if text:
            row["val_ppl"] = float(np.exp(val_loss[i]))
        curves.append(row)

    finite = ~np.isnan(acc)
    best_i = int(np.nanargmax(acc)) if finite.any() else 0
    last = int(np.flatnonzero(finite)[-1]) if finite.any() else 0
    drops = -np.diff(acc[finite]) if finite.sum() > 1 else np.array([0.0])
    rises = np.diff(val_loss[finite]) / val_loss[finite][:-1] if finite.sum() > 1 else np.zeros(1)
    fp32_bytes = 4 * params
    q_frac = 0.0 if not quant else 0.97
    params_q = int(params * q_frac)
    qbits = 32.0 if not quant else bits
    quantized_bytes = params_q * qbits / 8 + (params - params_q) * 4
    final_acc = 0.1 if diverged else float(acc[last])
    result: dict[str, Any] = {
        "model": model, "dataset": m["dataset"], "task": m["task"], "precision": precision,
        "levels": levels, "bits": bits if quant else 32.0, "zero": bool(zero),
        "augment": augment, "epochs": epochs, "seed": seed, "lr": 1e-3, "width": width,
        "params": params, "params_quantized": params_q,
        "train_loss": float(train_loss[last]), "val_loss": float(val_loss[last]),
        "val_acc": final_acc, "best_val_acc": float(acc[best_i]), "best_epoch": best_i + 1,
        "test_acc": final_acc if diverged else float(np.clip(final_acc + rng.normal(-0.004, 0.003),
                                                             0, 1)),
        "diverged": diverged, "diverged_epoch": div_epoch,
        "loss_spikes": int((rises > 0.1).sum()),
        "max_val_acc_drop": float(max(drops.max(), 0.0)),
        "flip_rate": None if not quant else float(flip[last]),
        "weight_bits": params_q * qbits / params + (params - params_q) * 32 / params,
        "fp32_bytes": fp32_bytes, "quantized_bytes": quantized_bytes,
        "compression": fp32_bytes / quantized_bytes,
        "fit_seconds": float(0.5 * epochs * size**-0.5),
        "scale_rule": "std", "final_minus_best": float(acc[last] - acc[best_i]),
        "grad_norm": float(grad[last]), "git_commit": "0000000synthetic", "version": "0.0.0",
        "torch_version": "2.13.0", "device": "cpu",
    }
    if quant:
        result["packed_bytes"] = params_q * math.ceil(bits) / 8 + (params - params_q) * 4
    if text:
        result["val_ppl"] = float(np.exp(val_loss[last]))
        result["test_ppl"] = result["val_ppl"] * 1.02
    config = {k: result[k] for k in ("model", "dataset", "task", "precision", "augment", "epochs",
                                     "seed", "lr", "width", "scale_rule")}
    config["batch_size"] = 128
    return result, curves, config


def synthetic_records(
    *,
    models: Sequence[str] = ("fc", "cnn"),
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    seeds: Sequence[int] = (0, 1, 2),
    augments: Sequence[str] = ("none", "standard"),
    widths: dict[str, Sequence[int]] | None = None,
    epochs: Sequence[int] = (12,),
    failed: int = 1,
    rng_seed: int = 0,
) -> list[dict[str, Any]]:
    """Run records (the shape ``frames_from_records`` reads) for the full grid of the arguments;
    ``failed`` extra records are FAIL trials with an error message and only a config."""
    rng = np.random.default_rng(rng_seed)
    widths = widths or {}
    records: list[dict[str, Any]] = []
    for model in models:
        for width in widths.get(model, (MODELS[model]["ref"],)):
            for augment in augments if MODELS[model]["task"] == "image" else ("none",):
                for ep in epochs:
                    for precision in precisions:
                        for seed in seeds:
                            result, curves, config = _run(rng, model, precision, width, augment,
                                                          ep, seed)
                            n = len(records)
                            records.append({
                                "run_id": f"trial-{n}", "trial": n, "state": "COMPLETE",
                                "result": result, "curves": curves, "config": config,
                                "cell": f"{model}/w{width}/{augment}/e{ep}/{precision}",
                            })
    for i in range(failed):
        n = len(records)
        config = {"model": models[0], "dataset": MODELS[models[0]]["dataset"],
                  "precision": precisions[-1], "augment": augments[0], "epochs": epochs[0],
                  "seed": 100 + i, "width": widths.get(models[0], (MODELS[models[0]]["ref"],))[0]}
        records.append({"run_id": f"trial-{n}", "trial": n, "state": "FAIL", "config": config,
                        "error": "RuntimeError: CUDA out of memory (synthetic failure)",
                        "cell": "failed"})
    return records


LR_MULTIPLES = (1, 3, 10, 30)  # the lr-stress sweep's multiples of the default lr


def _stress_curves(acc: float, epochs: int, broke: bool, oscillation: float | None
                   ) -> list[dict[str, Any]]:
    """Validation accuracy rising to ``acc``; a run that broke stops after epoch 1 (NaN after:
    diverged at epoch 2)."""
    rows = []
    for e in range(1, epochs + 1):
        val = acc - 0.2 * (epochs - e) / epochs
        rows.append({"epoch": e, "val_acc": float("nan") if broke and e > 1 else val,
                     "val_loss": float("nan") if broke and e > 1 else 2.0 * (1 - val),
                     "oscillation": None if oscillation is None else oscillation * e / epochs})
    return rows


def lr_stress_records(
    breaks: Callable[[Mapping[str, Any]], float | None],
    *,
    models: Sequence[str] = ("fc",),
    precisions: Sequence[str] = ("fp32", "bnn", "1", "1.58", "2", "2.32"),
    augments: Sequence[str] = ("none",),
    seeds: Sequence[int] = (0, 1, 2),
    multiples: Sequence[float] = LR_MULTIPLES,
    base_lr: float = 0.002,
    epochs: int = 4,
    accuracy: Callable[[Mapping[str, Any]], float] | None = None,
    oscillation: bool = False,
    rng_seed: int = 0,
) -> list[dict[str, Any]]:
    """An lr-stress study with a known frontier: every model x precision x augment x seed x lr
    multiple. ``breaks(run)`` gives the multiple from which that run diverges (None: never);
    ``run`` holds model, precision, augment, seed and multiple. ``accuracy(run)``: the final
    accuracy of a run that did not diverge (default: by resolution, plus 0.2 points of noise).
    ``oscillation``: quantised runs report it (result fields and a curves column), as runs with
    RunConfig.track_oscillation do."""
    rng = np.random.default_rng(rng_seed)
    records: list[dict[str, Any]] = []
    for model, precision, augment, seed, multiple in itertools.product(
            models, precisions, augments, seeds, multiples):
        run = {"model": model, "precision": precision, "augment": augment, "seed": seed,
               "multiple": multiple}
        start = breaks(run)
        broke = start is not None and multiple >= start
        bits = precision_bits(precision)
        acc = accuracy(run) if accuracy else 0.95 - (0.0 if precision == "fp32" else
                                                     0.08 * math.exp(-(bits - 1)))
        acc += rng.normal(0, 0.002)
        osc = None if not oscillation or precision == "fp32" else 0.01 * math.sqrt(multiple)
        config = {"model": model, "dataset": "digits", "precision": precision,
                  "augment": augment, "epochs": epochs, "seed": seed, "lr": base_lr * multiple,
                  "width": 1.0, "scale_rule": "gauss"}
        result = {**config, "task": "image", "diverged": broke,
                  "diverged_epoch": 2 if broke else None,
                  "test_acc": None if broke else acc, "val_acc": None if broke else acc,
                  "best_val_acc": acc - 0.2 * (epochs - 1) / epochs if broke else acc,
                  "max_val_acc_drop": 0.0, "loss_spikes": 0}
        if oscillation:
            result.update(oscillation=osc, max_oscillation=None if osc is None else 1.5 * osc)
        n = len(records)
        records.append({"run_id": f"trial-{n}", "trial": n, "state": "COMPLETE",
                        "result": result, "config": config,
                        "curves": _stress_curves(acc, epochs, broke, osc),
                        "cell": f"{model}/{augment}/{precision}/lr{multiple:g}x"})
    return records


def add_to_study(study: Any, records: Sequence[dict[str, Any]]) -> None:
    """Store records as finished trials of a real Optuna study (any storage)."""
    import optuna

    trials = []
    for rec in records:
        attrs = {k: rec[k] for k in ("result", "curves", "config", "cell", "error") if k in rec}
        if rec["state"] == "COMPLETE":
            value = rec["result"].get("test_acc")
            value = float(value) if value is not None and math.isfinite(value) else 0.0
            trials.append(optuna.trial.create_trial(value=value, user_attrs=attrs))
        else:
            state = optuna.trial.TrialState[rec["state"]]
            trials.append(optuna.trial.create_trial(state=state, user_attrs=attrs))
    study.add_trials(trials)
