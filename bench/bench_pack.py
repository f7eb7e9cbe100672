"""Packed-file size and pack/unpack speed per resolution.

For each model shape and resolution (N in {2,3,4,5,8,9,16,17} and bnn) it packs the model
(``pack_model``: level indices + packing + header), unpacks it (``unpack_bytes`` + dequantised
``state_dict``) and reports the file size, packed bits and index entropy per weight, compression
against the fp32 state_dict, and throughput in MB of fp32 weights per second (best of ``--reps``).

Weights are the layers' initial values (uniform init, default ``gauss`` scale rule), so the
entropy column describes an untrained model; trained weights are closer to Gaussian.

    python bench/bench_pack.py [--reps 3] [--models mlp,cnn] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from suite.quant import QuantConfig, QuantConv2d, QuantLinear, parse_resolution  # noqa: E402
from suite.quant.pack import group_for, pack_model, unpack_bytes  # noqa: E402

RESOLUTIONS = ["N=2", "N=3", "N=4", "N=5", "N=8", "N=9", "N=16", "N=17", "bnn"]


def mlp(qc: QuantConfig) -> nn.Module:
    """784-1024-1024-10, biases fp32 (quantised at bnn, as in paper 1)."""
    return nn.Sequential(
        QuantLinear(784, 1024, qconfig=qc),
        nn.ReLU(),
        QuantLinear(1024, 1024, qconfig=qc),
        nn.ReLU(),
        QuantLinear(1024, 10, qconfig=qc),
    )


def cnn(qc: QuantConfig) -> nn.Module:
    """Four 3x3 conv blocks (32-64-128-256 channels) on 32x32x3 and a linear head."""
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in (32, 64, 128, 256):
        layers += [
            QuantConv2d(c_in, c_out, 3, padding=1, qconfig=qc),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        c_in = c_out
    layers += [nn.Flatten(), QuantLinear(256 * 2 * 2, 10, qconfig=qc)]
    return nn.Sequential(*layers)


MODELS = {"mlp": mlp, "cnn": cnn}


def _best(fn: Any, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(model_name: str, res: str, reps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    qc = QuantConfig(resolution=parse_resolution(res))
    model = MODELS[model_name](qc).eval()
    meta = {"model_spec": {"kind": model_name, "resolution": res}}
    data = pack_model(model, meta)
    stats = unpack_bytes(data).stats()  # the same PackStats save_packed returns
    t_pack = _best(lambda: pack_model(model, meta), reps)
    t_unpack = _best(lambda: unpack_bytes(data).state_dict(), reps)
    n = qc.resolution.levels
    g, b = group_for(n)
    mb = stats.fp32_bytes / 1e6
    return {
        "model": model_name,
        "resolution": str(qc.resolution),
        "N": n,
        "g": g,
        "b": b,
        "log2N": math.log2(n),
        "params_quantized": stats.params_quantized,
        "fp32_bytes": stats.fp32_bytes,
        "file_bytes": stats.file_bytes,
        "bits_per_weight": stats.bits_per_weight,
        "entropy_bits_per_weight": stats.entropy_bits_per_weight,
        "compression": stats.compression,
        "pack_s": t_pack,
        "unpack_s": t_unpack,
        "pack_MBps": mb / t_pack,
        "unpack_MBps": mb / t_unpack,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | res | N | g/b | log2 N | bits/w | entropy/w | file bytes | fp32 bytes "
        "| compression | pack MB/s | unpack MB/s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['resolution']} | {r['N']} | {r['g']}/{r['b']} "
            f"| {r['log2N']:.3f} | {r['bits_per_weight']:.3f} | {r['entropy_bits_per_weight']:.3f} "
            f"| {r['file_bytes']:,} | {r['fp32_bytes']:,} | {r['compression']:.1f}x "
            f"| {r['pack_MBps']:.0f} | {r['unpack_MBps']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--resolutions", default=",".join(RESOLUTIONS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [
        bench(m, r, args.reps) for m in args.models.split(",") for r in args.resolutions.split(",")
    ]
    cmd = "python bench/bench_pack.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(
        f"`{cmd.strip()}` (torch {torch.__version__}, {args.threads} torch thread(s), "
        f"best of {args.reps})\n"
    )
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
