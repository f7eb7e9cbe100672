"""Training cost: Lightning vs a plain torch loop, and fake-quant vs fp32 vs peer libraries.

Part ``overhead``: the same CNN (suite "cnn" preset), data (Fashion-MNIST per-class subset when
Debian's dataset-fashion-mnist is installed, else digits), batches (DeviceLoader), optimiser and
schedule, trained by (a) a plain torch loop (train + val pass per epoch) and (b) ``suite.run.train.
train`` (Lightning, EpochRecorder with grad norm and flip rate, torchmetrics, offline W&B).
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

    python bench/bench_train.py [--part overhead|quant|all] [--threads 1] [--reps 7] [--steps 10]
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
    parser.add_argument("--part", choices=("overhead", "quant", "all"), default="all")
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
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("CI", "true")
    warnings.filterwarnings("ignore")  # peers' import-time deprecation chatter
    torch.set_num_threads(args.threads)
    print("$ python bench/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores")
    out: dict[str, Any] = {}
    if args.part in ("quant", "all"):
        out["quant"] = part_quant(args)
    if args.part in ("overhead", "all"):
        out["overhead"] = part_overhead(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
