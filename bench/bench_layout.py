"""Is channels_last worth it end to end? train()'s fit time with memory_format forced each way.

The small CNN at 2.32 bits (norm auto: batch) trained by ``train()`` as a study runs it, on:
  colour   Food-101-layout photos decoded to 32 x 32 x 3 (a generated tree of --images JPEGs,
           bench_food101.make_tree: CIFAR-sized colour images, the case a step benchmark said
           channels_last wins);
  fashion  Fashion-MNIST, 1 x 28 x 28, --subset images per class (needs the Debian package);
  digits   the embedded 8 x 8 x 1 digits.
Each pair is one run of each layout back to back, the order alternating; the figure is the
median over --pairs of channels_last / contiguous fit_seconds (W&B disabled, --threads torch
threads). suite/run/layout.py's auto rule comes from this table.

    python bench/bench_layout.py [--pairs 3] [--epochs 3] [--images 2000] [--subset 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from bench_food101 import make_tree  # noqa: E402

CASES = {"colour": {"dataset": "food101", "image_size": 32}, "fashion": {"dataset": "fashion-mnist"},
         "digits": {"dataset": "digits"}}


def fit_seconds(case: dict, layout: str, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    from suite.run.config import RunConfig
    from suite.run.train import train

    config = RunConfig(model="cnn", precision="2.32", epochs=args.epochs, threads=args.threads,
                       wandb_mode="disabled", device="cpu", memory_format=layout, **case)
    result = train(config, out / f"{layout}", progress=False)
    return result["fit_seconds"], result["val_loss"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=2000, help="colour: generated images")
    parser.add_argument("--subset", type=int, default=200, help="fashion: images per class")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=tuple(CASES))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["BITSWEEP_DATA_DIR"] = str(work / "data")
        os.environ.setdefault("BITSWEEP_DATA_MIRROR", "http://127.0.0.1:9")  # never the network
        make_tree(work / "data" / "food101" / "food-101", args.images, 128, 96, 10)
        print(f"$ python bench/bench_layout.py {' '.join(argv or sys.argv[1:])}")
        print("| data | contiguous fit s | channels_last fit s | ratio (median of pairs) | val loss "
              "contiguous / channels_last |")
        print("|---|---|---|---|---|")
        for name in args.cases:
            case = dict(CASES[name])
            if name == "fashion":
                case["subset"] = args.subset
            times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
            losses: dict[str, float] = {}
            ratios = []
            for pair in range(args.pairs):
                order = ("contiguous", "channels_last") if pair % 2 == 0 else ("channels_last", "contiguous")
                got = {}
                for layout in order:
                    got[layout], losses[layout] = fit_seconds(case, layout, args, work / name / str(pair))
                    times[layout].append(got[layout])
                ratios.append(got["channels_last"] / got["contiguous"])
            print(f"| {name} | {statistics.median(times['contiguous']):.2f} | "
                  f"{statistics.median(times['channels_last']):.2f} | **{statistics.median(ratios):.3f}** "
                  f"({min(ratios):.2f}-{max(ratios):.2f}) | {losses['contiguous']:.6f} / "
                  f"{losses['channels_last']:.6f} |", flush=True)


if __name__ == "__main__":
    main()
