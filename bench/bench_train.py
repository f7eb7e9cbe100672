"""Training cost: Lightning vs a plain torch loop, and fake-quant vs fp32 vs peer libraries.

Part ``overhead``: the same CNN (suite "cnn" preset), data (Fashion-MNIST per-class subset when
Debian's dataset-fashion-mnist is installed, else digits), batches (DeviceLoader), optimiser and
schedule, trained by (a) a plain torch loop (train + val pass per epoch) and (b) ``suite.run.train.
train`` (Lightning, EpochRecorder with grad norm and flip rate, epoch metrics, offline W&B).
Runs alternate; the figure is the median per-epoch time of (b) over (a), epochs after the first
(wall clock; process CPU time beside it, which leaves out W&B's own service process).
Goal: under 1.10.

Part ``quant``: training-step time (forward, backward, Adam step) of one architecture per model
family, built from suite.models and then re-layered: every QuantLinear/QuantConv2d swapped for
torch's nn layers (fp32, the baseline), or for Brevitas QuantLinear/QuantConv2d (2-bit int,
binary, ternary: the const-scale quantisers), or torchao QAT FakeQuantizedLinear (int2/int4
weights, per output channel; Linear only, so not on the CNN's convs), or kept as ours (fp32, N=2, 3,
4, 5 levels, bnn). Embeddings are plain nn.Embedding in every variant. Variants alternate step
blocks within one run; each figure is the best block's mean step time (thread CPU time with one
torch thread, robust to other processes on a shared machine; wall time is printed beside it), as
a ratio to fp32. Goal: ours <= the best peer (small CNN 1.03x, 4-layer transformer 1.05x,
784-1024-1024-10 MLP 1.15x).

Part ``study``: the default study's models (sweeps/default.yaml: fc, cnn, vit on digits at 24
epochs, the character LM on stdlib-text at 6; batch 128, Adam, cosine with one warm-up epoch),
``train()``'s ``fit_seconds`` vs a plain loop doing the same steps and a validation pass per epoch
(loss and accuracy summed on the device, read once per epoch) under the same seed and
deterministic settings: both end at the same train loss, val loss and val accuracy, bit for bit
(checked). ``--study-runs`` runs, each a back-to-back pair (its order alternating); the figure is
the median of the pairs' ratios of wall time, process CPU time beside it. Goal: <= 1.15.

Part ``trial``: what one ``train()`` call costs outside ``trainer.fit`` (set-up, W&B, Trainer
construction, test pass, files), per phase, median over ``--trials`` trials of each default-study
model at its short budget (4 epochs; LM 2), W&B offline and disabled interleaved.

``--record DIR`` trains ``identity_configs()`` (25 default-study configurations, a few epochs, W&B
disabled) into DIR; ``--compare BEFORE AFTER`` checks two such directories field by field, cell by
cell and byte by byte (weights, packed file): run it around a change that must not change results.

    python bench/bench_train.py [--part overhead|quant|study|trial|all] [--threads 1] [--reps 7]
        [--steps 10] [--study-runs 3] [--models fc cnn vit lm] [--trials 5]
    python bench/bench_train.py --record DIR;  python bench/bench_train.py --compare BEFORE AFTER
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from suite.models import build_model  # noqa: E402
from suite.quant import QuantConfig, QuantConv2d, QuantEmbedding, QuantLinear  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# --- part 1: Lightning + callbacks vs a plain loop -------------------------------------------

def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(last: tuple[float, float]) -> tuple[float, float]:
    now = _now()
    return now[0] - last[0], now[1] - last[1]


def plain_fit(config: Any, epoch_times: list[tuple[float, float]]) -> float:
    """What train() does, by hand: same model, data, batches, optimiser, schedule, val pass."""
    import lightning as L

    from suite.data import DeviceLoader, make_augment
    from suite.models import model_from_spec
    from suite.run.train import dataset_for, spec_for

    L.seed_everything(config.seed, verbose=False)
    data = dataset_for(config)
    model = model_from_spec(spec_for(config, data))
    train_loader = DeviceLoader(data.train_x, data.train_y, config.batch_size, shuffle=True,
                                seed=config.seed, augment=make_augment(config.augment, data.image_kind))
    val_loader = DeviceLoader(data.val_x, data.val_y, max(config.batch_size, 256), shuffle=False,
                              seed=config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    total = len(train_loader) * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(  # suite.run.module's cosine, no warm-up
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total))))
    last = _now()
    val_acc = 0.0
    for _ in range(config.epochs):
        model.train()
        loss_sum = torch.zeros(())
        for xb, yb in train_loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in val_loader:
                correct += int((model(xb).argmax(1) == yb).sum())
        val_acc = correct / len(data.val_y)
        float(loss_sum)
        epoch_times.append(_since(last))
        last = _now()
    return val_acc


def lightning_fit(config: Any, out: Path, epoch_times: list[tuple[float, float]]) -> float:
    import lightning as L

    from suite.run.train import train

    class EpochClock(L.Callback):
        """Time between consecutive epoch ends (train + val + every callback in between)."""

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.last = _now()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            epoch_times.append(_since(self.last))
            self.last = _now()

    return train(config, out, callbacks=[EpochClock()], progress=False)["val_acc"]


def part_overhead(args: argparse.Namespace) -> dict[str, Any]:
    from suite.run.config import RunConfig

    dataset = args.dataset or ("fashion-mnist" if FASHION_DIR.is_dir() else "digits")
    rows = {}
    for precision in ("fp32", "2.32"):
        config = RunConfig(model="cnn", dataset=dataset, subset=args.subset, precision=precision,
                           epochs=args.epochs, threads=args.threads, wandb_mode="offline")
        times: dict[str, list[tuple[float, float]]] = {"plain": [], "lightning": []}
        accs: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.runs):  # alternate whole runs, swapping which goes first
                for kind in ("plain", "lightning")[::1 if rep % 2 == 0 else -1]:
                    epochs: list[tuple[float, float]] = []
                    if kind == "plain":
                        accs[kind] = plain_fit(config, epochs)
                    else:
                        accs[kind] = lightning_fit(config, Path(tmp) / f"{precision}-{rep}", epochs)
                    times[kind] += epochs[1:]  # first epoch: warm-up
        wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
        cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
        rows[precision] = {
            "plain_s_per_epoch": wall["plain"], "lightning_s_per_epoch": wall["lightning"],
            "ratio": wall["lightning"] / wall["plain"],
            "plain_cpu_s_per_epoch": cpu["plain"], "lightning_cpu_s_per_epoch": cpu["lightning"],
            "cpu_ratio": cpu["lightning"] / cpu["plain"],
            "val_acc_plain": accs["plain"], "val_acc_lightning": accs["lightning"],
        }
    print(f"\n## overhead: cnn on {dataset} (subset {args.subset}/class), {args.epochs} epochs x "
          f"{args.runs} alternating runs, {args.threads} thread(s)")
    print("| precision | plain s/epoch | train() s/epoch | ratio (wall) | ratio (process CPU) "
          "| val acc plain / train() |")
    print("|---|---|---|---|---|---|")
    for precision, r in rows.items():
        print(f"| {precision} | {r['plain_s_per_epoch']:.3f} | {r['lightning_s_per_epoch']:.3f} | "
              f"{r['ratio']:.3f} | {r['cpu_ratio']:.3f} | "
              f"{r['val_acc_plain']:.3f} / {r['val_acc_lightning']:.3f} |")
    return {"dataset": dataset, "rows": rows}


# --- part 3: the default study's workload: train() fit vs the same plain loop ------------------

# sweeps/default.yaml's fixed settings and its longer epoch budgets
STUDY_FIXED = {"dataset": "digits", "batch_size": 128, "lr": 0.002, "schedule": "cosine",
               "warmup_epochs": 1.0, "precision": "2.32", "threads": 1}
STUDY_MODELS = {
    "fc": {"model": "fc", "epochs": 24},
    "cnn": {"model": "cnn", "epochs": 24},
    "vit": {"model": "vit", "epochs": 24},
    "lm": {"model": "lm", "dataset": "stdlib-text", "subset": 1024, "block_size": 64, "lr": 0.003,
           "epochs": 6},
}
# the short budgets of the same grids, for the per-trial part
TRIAL_EPOCHS = {"fc": 4, "cnn": 4, "vit": 4, "lm": 2}


def study_config(name: str, **changes: Any) -> Any:
    from suite.run.config import RunConfig

    return RunConfig(**{**STUDY_FIXED, **STUDY_MODELS[name], **changes})


def _lr_factor(config: Any, steps_per_epoch: int) -> Callable[[int], float]:
    """suite.run.module's schedule: linear warm-up, then cosine to zero."""
    total = max(1, steps_per_epoch * config.epochs)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return factor


def _eval_pass(model: nn.Module, loader: Any, text: bool) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, items, targets = torch.zeros(()), torch.zeros((), dtype=torch.long), 0, 0
    with torch.inference_mode():
        for xb, yb in loader:
            out = model(xb)
            logits, target = (out.reshape(-1, out.shape[-1]), yb.reshape(-1)) if text else (out, yb)
            loss_sum += F.cross_entropy(logits, target) * len(xb)
            correct += (logits.argmax(1) == target).sum()
            items, targets = items + len(xb), targets + target.numel()
    return float(loss_sum / items), float(correct.float() / targets)


def plain_study_fit(config: Any) -> dict[str, float]:
    """What train() does, by hand and without Lightning: the same seed, model, batches,
    optimiser, schedule and deterministic settings, train steps and one validation pass per
    epoch, the epoch's numbers summed on the device and read once per epoch."""
    import lightning as L
    import torch.utils.deterministic as determinism

    from suite.data import DeviceLoader, make_augment
    from suite.models import model_from_spec
    from suite.run.train import dataset_for, spec_for

    data = dataset_for(config)
    text = data.task == "text"
    L.seed_everything(config.seed, workers=False, verbose=False)
    augment = make_augment(config.augment, data.image_kind)
    train_loader = DeviceLoader(data.train_x, data.train_y, config.batch_size, shuffle=True,
                                seed=config.seed, augment=augment)
    val_loader = DeviceLoader(data.val_x, data.val_y, max(config.batch_size, 256), shuffle=False,
                              seed=config.seed)
    model = model_from_spec(spec_for(config, data))
    before = torch.are_deterministic_algorithms_enabled(), determinism.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)  # as Lightning's deterministic=True does
    determinism.fill_uninitialized_memory = False  # as train() does
    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(config, len(train_loader)))
        for _ in range(config.epochs):
            model.train()
            loss_sum, items = torch.zeros(()), 0
            for xb, yb in train_loader:
                out = model(xb)
                loss = F.cross_entropy(*((out.reshape(-1, out.shape[-1]), yb.reshape(-1))
                                         if text else (out, yb)))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach() * len(xb)
                items += len(xb)
            train_loss = float(loss_sum / items)
            val_loss, val_acc = _eval_pass(model, val_loader, text)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        torch.use_deterministic_algorithms(before[0])
        determinism.fill_uninitialized_memory = before[1]
    return {"seconds": seconds, "cpu": cpu, "val_acc": val_acc, "val_loss": val_loss,
            "train_loss": train_loss}


class _FitClock:
    """Process CPU time of each ``Trainer.fit`` (fit_seconds is its wall time), without adding
    a callback to the fit being measured."""

    def __init__(self) -> None:
        import lightning as L

        self.cpu: list[float] = []
        self._fit = L.Trainer.fit
        clock = self

        def fit(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return clock._fit(trainer, *args, **kwargs)
            finally:
                clock.cpu.append(time.process_time() - start)

        L.Trainer.fit = fit


def train_study_fit(config: Any, out: Path, clock: _FitClock) -> dict[str, float]:
    from suite.run.train import train

    result = train(config, out, progress=False)
    return {"seconds": result["fit_seconds"], "cpu": clock.cpu[-1], "val_acc": result["val_acc"],
            "val_loss": result["val_loss"], "train_loss": result["train_loss"]}


def part_study(args: argparse.Namespace) -> dict[str, Any]:
    clock = _FitClock()
    names = [n for n in STUDY_MODELS if n in args.models]
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:  # warm-up: data load, allocator, lazy kernels (not counted)
            config = study_config(name, epochs=2, wandb_mode=args.wandb)
            plain_study_fit(config)
            train_study_fit(config, Path(tmp) / f"warm-{name}", clock)
        for rep in range(args.study_runs):
            for name in names:
                config = study_config(name, wandb_mode=args.wandb)
                for kind in ("plain", "train")[:: 1 if rep % 2 == 0 else -1]:
                    got = (plain_study_fit(config) if kind == "plain"
                           else train_study_fit(config, Path(tmp) / f"{name}-{rep}", clock))
                    runs.setdefault((name, kind), []).append(got)
    rows = {}
    for name in names:
        plain, ours = runs[(name, "plain")], runs[(name, "train")]
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "cpu")}
               for k, v in (("plain", plain), ("train", ours))}
        rows[name] = {
            "plain_s": med["plain"]["seconds"], "train_s": med["train"]["seconds"],
            # each run's pair ran back to back: the median of their ratios leaves out more of this
            # VM's slow swings in speed (+-20% over a minute) than a ratio of medians would
            "ratio": statistics.median(t["seconds"] / p["seconds"] for p, t in zip(plain, ours)),
            "cpu_ratio": statistics.median(t["cpu"] / p["cpu"] for p, t in zip(plain, ours)),
            "same_numbers": all(p[m] == t[m] for p, t in zip(plain, ours)
                                for m in ("val_acc", "val_loss", "train_loss")),
            "val_acc": ours[-1]["val_acc"], "all_s": {"plain": [r["seconds"] for r in plain],
                                                      "train": [r["seconds"] for r in ours]},
        }
    print(f"\n## study: default-study models at 2.32 bits, {args.study_runs} back-to-back pairs, "
          f"{args.threads} thread(s), W&B {args.wandb}; times: medians; ratios: median of the pairs'")
    print("| model (epochs) | plain loop | train() fit_seconds | ratio (wall) | ratio (process CPU) "
          "| same val/train numbers |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        epochs = STUDY_MODELS[name]["epochs"]
        print(f"| {name} ({epochs}) | {r['plain_s']:.2f} s | {r['train_s']:.2f} s | {r['ratio']:.3f} | "
              f"{r['cpu_ratio']:.3f} | {'yes' if r['same_numbers'] else 'NO'} (val acc {r['val_acc']:.4f}) |")
    return rows


# --- part 4: one trial outside the fit ---------------------------------------------------------

class _PhaseClock:
    """Wall time of each phase of train(), by wrapping its functions where train() looks them up
    (works on any version of suite/run/train.py that has them)."""

    PHASES = (("suite.run.train", "_prepare", "prepare (data cached, model, loaders)"),
              ("suite.run.train", "_make_run_dir", "run directory, config/model json"),
              ("suite.run.tracking", "start_run", "W&B init"),
              ("suite.run.tracking", "make_logger", "W&B logger"),
              ("suite.run.train", "_fit", "_fit"),
              ("suite.run.train", "_finish", "_finish"),
              ("suite.run.train", "_measure", "test pass and measures"),
              ("suite.run.train", "_write_curves", "curves.csv"),
              ("suite.run.train", "_write_artifacts", "safetensors + packed file"),
              ("suite.run.tracking", "finish", "W&B finish"))

    def __init__(self) -> None:
        import importlib

        import lightning as L

        self.last: dict[str, float] = {}
        for module_name, attr, label in self.PHASES:
            module = importlib.import_module(module_name)
            if hasattr(module, attr):
                setattr(module, attr, self._timed(getattr(module, attr), label))
        L.Trainer.__init__ = self._timed(L.Trainer.__init__, "Trainer()")

    def _timed(self, fn: Callable, label: str) -> Callable:
        last = self.last

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                last[label] = last.get(label, 0.0) + time.perf_counter() - start

        return timed


def _trial_phases(measured: dict[str, float], fit_seconds: float, wall: float) -> dict[str, float]:
    """Per-phase seconds of one trial: the wrapped functions' own time (nested ones subtracted
    from their callers), the fit, and what no phase covers (train()'s own glue)."""
    phases = dict(measured)
    phases["fit"] = fit_seconds
    del phases["_fit"]  # = Trainer() + W&B logger + fit + a few lines: "other" below
    phases["result.json"] = (phases.pop("_finish", 0.0) - phases.get("test pass and measures", 0.0)
                             - phases.get("curves.csv", 0.0)
                             - phases.get("safetensors + packed file", 0.0))
    phases["outside the fit"] = wall - fit_seconds
    covered = sum(v for k, v in phases.items() if k not in ("fit", "outside the fit"))
    phases["other (train() glue, _fit's own lines)"] = phases["outside the fit"] - covered
    return phases


def part_trial(args: argparse.Namespace) -> dict[str, Any]:
    from suite.run.train import train

    clock = _PhaseClock()
    names = [n for n in STUDY_MODELS if n in args.models]
    got: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.trials + 1):  # the first round warms up (data, imports, W&B service)
            for name in names:
                for mode in ("disabled", "offline")[:: 1 if rep % 2 == 0 else -1]:
                    config = study_config(name, epochs=TRIAL_EPOCHS[name], wandb_mode=mode)
                    clock.last.clear()
                    start = time.perf_counter()
                    result = train(config, Path(tmp) / f"{name}-{mode}-{rep}", progress=False)
                    phases = _trial_phases(clock.last, result["fit_seconds"], time.perf_counter() - start)
                    if rep:
                        got.setdefault((name, mode), []).append(phases)
    labels = [label for _, _, label in _PhaseClock.PHASES if label not in ("_fit", "_finish")]
    labels[4:4] = ["Trainer()"]
    labels += ["result.json", "other (train() glue, _fit's own lines)", "outside the fit", "fit"]
    table = {key: {label: 1e3 * statistics.median(p.get(label, 0.0) for p in runs) for label in labels}
             for key, runs in got.items()}
    print(f"\n## trial: one train() call outside the fit, ms, median of {args.trials} trials "
          f"(default-study models at 2.32 bits, {TRIAL_EPOCHS} epochs), {args.threads} thread(s)")
    cols = [(n, m) for m in ("disabled", "offline") for n in names]
    print("| phase | " + " | ".join(f"{n} W&B {m}" for n, m in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for label in labels:
        print(f"| {label} | " + " | ".join(f"{table[c][label]:.1f}" for c in cols) + " |")
    return {f"{n}/{m}": table[(n, m)] for n, m in cols}


# --- part 5: results unchanged by a change (bit for bit) ---------------------------------------

def identity_configs() -> dict[str, Any]:
    """Default-study configurations for a before/after check, a few epochs each: every family at
    2.32 bits, 1 bit (1.58 for the LM), bnn and fp32, augmentation, widths, gradient clipping, and
    two runs that diverge."""
    off = {"wandb_mode": "disabled"}
    configs = {}
    for model in ("fc", "cnn", "vit"):
        for precision in ("2.32", "1", "bnn", "fp32"):
            configs[f"{model}-{precision}"] = study_config(model, precision=precision, epochs=3,
                                                           seed=1, **off)
        configs[f"{model}-2.32-aug"] = study_config(model, augment="standard", epochs=3, **off)
    configs["fc-w0.25"] = study_config("fc", width=0.25, epochs=3, **off)
    configs["cnn-w2.5-bnn"] = study_config("cnn", width=2.5, precision="bnn", epochs=2, **off)
    configs["fc-clip"] = study_config("fc", grad_clip=0.05, epochs=3, **off)
    configs["cnn-fp32-clip"] = study_config("cnn", precision="fp32", grad_clip=0.1, epochs=3, **off)
    configs["cnn-diverged"] = study_config("cnn", lr=1e6, epochs=3, **off)
    configs["fc-fp32-diverged"] = study_config("fc", precision="fp32", lr=1e4, epochs=3, **off)
    for precision in ("2.32", "1.58", "bnn", "fp32"):
        configs[f"lm-{precision}"] = study_config("lm", precision=precision, epochs=2, **off)
    return configs


def part_record(args: argparse.Namespace) -> dict[str, Any]:
    from suite.run.train import train

    out = Path(args.record)
    for name, config in identity_configs().items():
        train(config, out / name, progress=False)
    print(f"\n## record: {len(identity_configs())} runs in {out}")
    return {"runs": str(out)}


# differ between two runs of the same configuration whatever the code does
VOLATILE = {"fit_seconds", "git_commit", "wandb_run_id"}


def compare_runs(before: Path, after: Path) -> list[str]:
    """Every result.json field but VOLATILE, every curves.csv cell and the bytes of the weights
    and the packed file of each run in ``before`` against the same run in ``after``."""
    import csv

    diffs, values = [], 0
    for run in sorted(p for p in before.iterdir() if p.is_dir()):
        other = after / run.name
        a, b = (json.loads((d / "result.json").read_text()) for d in (run, other))
        for key in sorted((set(a) | set(b)) - VOLATILE):
            values += 1
            if a.get(key) != b.get(key) and not (a.get(key) != a.get(key) and b.get(key) != b.get(key)):
                diffs.append(f"{run.name}: result {key}: {a.get(key)!r} -> {b.get(key)!r}")
        rows_a, rows_b = (list(csv.reader((d / "curves.csv").open())) for d in (run, other))
        values += sum(len(r) for r in rows_a)
        if rows_a != rows_b:
            diffs.append(f"{run.name}: curves.csv differs")
        for name in ("model.safetensors", "model.bsw"):
            if (run / name).read_bytes() != (other / name).read_bytes():
                diffs.append(f"{run.name}: {name} differs")
    print(f"\n## compare: {before} vs {after}: {len(list(before.iterdir()))} runs, {values} result "
          f"fields and curve cells (+ weights and packed files), {len(diffs)} differences")
    for line in diffs:
        print("-", line)
    return diffs


# --- part 2: fake-quant step time vs fp32 vs peers -------------------------------------------

def _copy(dst: nn.Module, src: nn.Module) -> nn.Module:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if getattr(src, "bias", None) is not None and getattr(dst, "bias", None) is not None:
            dst.bias.copy_(src.bias)
    return dst


def relayer(model: nn.Module, linear: Callable | None, conv: Callable | None) -> nn.Module:
    """Swap every QuantLinear / QuantConv2d for ``linear(layer)`` / ``conv(layer)`` (None keeps
    it) and every QuantEmbedding for a plain nn.Embedding."""
    for name, child in list(model.named_children()):
        if isinstance(child, QuantEmbedding):
            new = nn.Embedding(child.num_embeddings, child.embedding_dim)
            with torch.no_grad():
                new.weight.copy_(child.weight)
            setattr(model, name, new)
        elif isinstance(child, QuantLinear) and linear is not None:
            setattr(model, name, _copy(linear(child), child))
        elif isinstance(child, QuantConv2d) and conv is not None:
            setattr(model, name, _copy(conv(child), child))
        else:
            relayer(child, linear, conv)
    return model


def torch_linear(m: QuantLinear) -> nn.Module:
    return nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)


def torch_conv(m: QuantConv2d) -> nn.Module:
    return nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                     bias=m.bias is not None)


def brevitas_layers(kind: str) -> tuple[Callable, Callable]:
    import brevitas.nn as qnn
    from brevitas.quant import SignedBinaryWeightPerTensorConst, SignedTernaryWeightPerTensorConst

    kw: dict[str, Any] = {
        "int2": {"weight_bit_width": 2},
        "binary": {"weight_quant": SignedBinaryWeightPerTensorConst},
        "ternary": {"weight_quant": SignedTernaryWeightPerTensorConst},
    }[kind]

    def linear(m: QuantLinear) -> nn.Module:
        return qnn.QuantLinear(m.in_features, m.out_features, bias=m.bias is not None, **kw)

    def conv(m: QuantConv2d) -> nn.Module:
        return qnn.QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                               padding=m.padding, bias=m.bias is not None, **kw)

    return linear, conv


def torchao_qat(model: nn.Module, bits: int) -> nn.Module:
    from torchao.quantization import quantize_
    from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

    dtype = {2: torch.int2, 4: torch.int4}[bits]
    # per output channel: 784 inputs do not split into groups of 32, and per-channel is the
    # cheaper of torchao's granularities (the stronger peer)
    quantize_(model, QATConfig(weight_config=IntxFakeQuantizeConfig(dtype, granularity="per_channel",
                                                                  is_symmetric=True),
                               step="prepare"))
    return model


FAMILIES = {
    # name: (suite model, build kwargs, input maker, description)
    "cnn": ("cnn", {"input_shape": (3, 32, 32), "num_classes": 10},
            lambda g: (torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)),
            "small CNN (suite cnn: conv 16-32-64 + BN, dense 64), batch 128 x 3x32x32"),
    "transformer": ("lm", {"input_shape": (64,), "num_classes": 96, "width": 4.0, "depth": 4},
                    lambda g: (torch.randint(0, 96, (16, 64), generator=g),
                               torch.randint(0, 96, (16, 64), generator=g)),
                    "4-layer transformer LM (suite lm, dim 256, 4 heads, ffn 512), batch 16 x 64 tokens"),
    "mlp": ("fc", {"input_shape": (1, 28, 28), "num_classes": 10, "width": 4.0, "depth": 2,
                   "norm": "none"},
            lambda g: (torch.randn(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)),
            "MLP 784-1024-1024-10 (suite fc, no norm), batch 128"),
}
OURS = {"ours fp32": "fp32", "ours N=2 (1 bit)": "1", "ours N=3 (ternary)": "1.58",
        "ours N=4 (2 bits)": "2", "ours N=5 (2.32)": "2.32", "ours bnn": "bnn"}
PEERS = ("brevitas int2", "brevitas binary", "brevitas ternary", "torchao int2", "torchao int4")
# ours vs the peer(s) doing the same job: (ours, peers)
MATCHES = (("ours N=2 (1 bit)", ("brevitas binary",)), ("ours N=3 (ternary)", ("brevitas ternary",)),
           ("ours N=4 (2 bits)", ("brevitas int2", "torchao int2")))


def variants(family: str) -> dict[str, nn.Module]:
    name, kwargs, _, _ = FAMILIES[family]

    def base(precision: str = "fp32") -> nn.Module:
        torch.manual_seed(0)
        return build_model(name, qconfig=QuantConfig(resolution=precision), **kwargs)

    out: dict[str, nn.Module] = {"fp32": relayer(base(), torch_linear, torch_conv)}
    for label, precision in OURS.items():
        out[label] = relayer(base(precision), None, None)
    for kind in ("int2", "binary", "ternary"):
        try:
            lin, conv = brevitas_layers(kind)
        except ImportError:
            break
        out[f"brevitas {kind}"] = relayer(base(), lin, conv)
    for bits in (2, 4):
        try:
            out[f"torchao int{bits}"] = torchao_qat(relayer(base(), torch_linear, torch_conv), bits)
        except ImportError:
            break
    return out


def time_steps(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, reps: int,
               steps: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-step thread CPU and wall seconds of each model, blocks of ``steps`` alternating."""
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}

    def step(key: str) -> None:
        model, opt = models[key], opts[key]
        opt.zero_grad(set_to_none=True)
        out = model(x)
        F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
        opt.step()

    for key in models:  # warm-up: allocator, kernels, lazy state
        for _ in range(3):
            step(key)
    cpu: dict[str, list[float]] = {k: [] for k in models}
    wall: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(reps):  # alternate blocks of steps so machine load hits all alike
        for key in models:
            start, start_cpu = time.perf_counter(), time.thread_time()
            for _ in range(steps):
                step(key)
            cpu[key].append((time.thread_time() - start_cpu) / steps)
            wall[key].append((time.perf_counter() - start) / steps)
    return cpu, wall


OURS_LEVELS = ("ours N=2 (1 bit)", "ours N=3 (ternary)", "ours N=4 (2 bits)")


def part_quant(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for family, (_, _, make_input, description) in FAMILIES.items():
        if args.families and family not in args.families:
            continue
        models = variants(family)
        x, y = make_input(torch.Generator().manual_seed(0))
        cpu, wall = time_steps(models, x, y, args.reps, args.steps)
        # With one torch thread all compute runs on this thread, so its CPU time is the step's
        # cost without the time other processes on this shared machine took the core away; the
        # best block of each variant is the least disturbed one (as timeit does).
        best = {k: min(v) for k, v in (cpu if args.threads == 1 else wall).items()}
        wall_best = {k: min(v) for k, v in wall.items()}
        ratio = {k: best[k] / best["fp32"] for k in best}
        wall_ratio = {k: wall_best[k] / wall_best["fp32"] for k in wall_best}
        peers = [p for p in PEERS if p in ratio and not (family == "cnn" and "torchao" in p)]
        best_peer = min(peers, key=ratio.get) if peers else None
        results[family] = {"description": description, "ms": {k: 1e3 * v for k, v in best.items()},
                           "ratio": ratio, "wall_ratio": wall_ratio, "best_peer": best_peer}
        timer = "thread CPU" if args.threads == 1 else "wall"
        print(f"\n## quant: {family}: {description}")
        print(f"| variant | ms/step ({timer}) | x fp32 | x fp32 (wall) |")
        print("|---|---|---|---|")
        for key in models:
            note = " (Linear head only: convs stay fp32)" if family == "cnn" and "torchao" in key else ""
            print(f"| {key}{note} | {1e3 * best[key]:.2f} | {ratio[key]:.3f} | {wall_ratio[key]:.3f} |")
        for ours, matching in MATCHES:
            peer_ratios = [ratio[p] for p in matching if p in peers]
            if peer_ratios:
                print(f"- {ours}: {ratio[ours]:.3f}x vs best matching peer {min(peer_ratios):.3f}x")
        if best_peer:
            worst_ours = max(ratio[k] for k in OURS_LEVELS)
            print(f"- best peer overall: {best_peer} {ratio[best_peer]:.3f}x; "
                  f"ours worst of N=2/3/4: {worst_ours:.3f}x")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("overhead", "quant", "study", "trial", "all"), default="all")
    parser.add_argument("--record", metavar="DIR", default=None,
                        help="only train identity_configs() into DIR (for --compare)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), default=None,
                        help="only compare two --record directories; exit 1 on any difference")
    parser.add_argument("--threads", type=int, default=1)
    # overhead
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--subset", type=int, default=500, help="train examples per class")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per variant")
    # quant
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--families", nargs="*", default=None, choices=tuple(FAMILIES))
    # study / trial
    parser.add_argument("--study-runs", type=int, default=3, help="interleaved runs per variant")
    parser.add_argument("--models", nargs="*", default=list(STUDY_MODELS), choices=tuple(STUDY_MODELS))
    parser.add_argument("--wandb", choices=("offline", "disabled"), default="offline",
                        help="W&B mode of the study part's train() runs (the sweep's is offline)")
    parser.add_argument("--trials", type=int, default=5, help="trials per model and W&B mode")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("CI", "true")
    warnings.filterwarnings("ignore")  # peers' import-time deprecation chatter
    torch.set_num_threads(args.threads)
    print("$ python bench/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores")
    if args.compare:
        sys.exit(1 if compare_runs(*map(Path, args.compare)) else 0)
    if args.record:
        return part_record(args)
    out: dict[str, Any] = {}
    if args.part in ("quant", "all"):
        out["quant"] = part_quant(args)
    if args.part in ("overhead", "all"):
        out["overhead"] = part_overhead(args)
    if args.part in ("study", "all"):
        out["study"] = part_study(args)
    if args.part in ("trial", "all"):
        out["trial"] = part_trial(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
