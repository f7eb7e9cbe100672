"""How much of a training epoch does the data path cost?

Times, per epoch, for a small plain-torch CNN:
  compute   forward/backward/step over pre-made batches (already shuffled and augmented);
  loader    DeviceLoader with "standard" augmentation alone (batches drawn, nothing trained);
  together  DeviceLoader + augmentation feeding the same training step.
Overhead = loader / compute (and, noisier, (together - compute) / compute), each variant's
best epoch of N; goal under 5%.
Uses Fashion-MNIST (a per-class subset) when Debian's dataset-fashion-mnist is installed, else
the embedded digits.

    python bench/bench_loader.py [--dataset NAME] [--subset N] [--epochs N] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from suite.data import DeviceLoader, load_dataset, make_augment

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def tiny_cnn(channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )  # fmt: skip


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float | int | str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "fashion-mnist" if FASHION_DIR.is_dir() else "digits"
    parser.add_argument("--dataset", default=default)
    parser.add_argument("--subset", type=int, default=600, help="examples per class")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per variant")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    splits = load_dataset(args.dataset, subset=args.subset, download=False)
    augment = make_augment("standard", splits.image_kind)
    loader = DeviceLoader(splits.train_x, splits.train_y, args.batch_size, shuffle=True, seed=0,
                          augment=augment)  # fmt: skip
    model = tiny_cnn(splits.input_shape[0], splits.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()

    premade = list(loader)  # one epoch's batches, made once

    def compute_epoch() -> None:
        for xb, yb in premade:
            step(xb, yb)

    def loader_epoch() -> None:
        for _ in loader:
            pass

    def together_epoch() -> None:
        for xb, yb in loader:
            step(xb, yb)

    compute_epoch()  # warm-up: allocator, kernels
    times: dict[str, list[float]] = {"compute": [], "loader": [], "together": []}
    for _ in range(args.epochs):  # interleaved so drift in machine load hits all alike
        times["compute"].append(_timed(compute_epoch))
        times["loader"].append(_timed(loader_epoch))
        times["together"].append(_timed(together_epoch))
    # Best of N, as timeit does: other processes only ever add time, so the minimum is the
    # least noisy estimate of each variant's own cost on a shared machine.
    best = {k: min(v) for k, v in times.items()}
    result: dict[str, float | int | str] = {
        "dataset": args.dataset,
        "train_examples": len(splits.train_y),
        "batches_per_epoch": len(loader),
        "threads": args.threads,
        "compute_s_per_epoch": best["compute"],
        "loader_s_per_epoch": best["loader"],
        "together_s_per_epoch": best["together"],
        "loader_overhead_pct": 100 * best["loader"] / best["compute"],
        "together_overhead_pct": 100 * (best["together"] - best["compute"]) / best["compute"],
    }
    print("$ python bench/bench_loader.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    for key, value in result.items():
        print(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")
    return result


if __name__ == "__main__":
    main()
