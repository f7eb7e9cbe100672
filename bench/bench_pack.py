"""Packed-file size and pack/unpack speed per model family and resolution.

For each model (the suite's own families at the sizes the sweeps use, plus paper 1's Food-101 CNN)
and resolution (fp32, N in {2,3,4,5,8,9,16,17}, bnn) it builds the model as ``bitsweep train``
does (``suite.models.build_model``, default options: default scale rule, norms and biases as the
family chooses) and measures:

- ``fp32 file``: the fp32 safetensors file ``bitsweep train`` writes (model.safetensors);
- ``packed file``: ``pack_model`` with the model spec in the header (what ``bitsweep pack``
  writes), its index bits per quantised weight, the empirical index entropy, and the ratio;
- pack speed (level indices + packing + header) and unpack speed (``unpack_bytes`` + the
  dequantised ``state_dict``), in MB of fp32 weights per second, best of ``--reps``.

Weights are the layers' initial values, so the entropy column describes an untrained model
(trained weights are closer to Gaussian, and a ternary tensor has more zeros).

    python bench/bench_pack.py [--reps 3] [--models fc,cnn,vit,lm,cnn-paper1-3x3] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from suite.models import build_model, model_spec  # noqa: E402
from suite.pack.codec import group_for  # noqa: E402
from suite.pack.format import pack_model, unpack_bytes  # noqa: E402
from suite.quant import QuantConfig, parse_resolution  # noqa: E402

RESOLUTIONS = ["fp32", "N=2", "N=3", "N=4", "N=5", "N=8", "N=9", "N=16", "N=17", "bnn"]
# name -> (model, input_shape, classes, what it stands for)
MODELS: dict[str, tuple[str, tuple[int, ...], int, str]] = {
    "fc": ("fc", (1, 28, 28), 10, "Fashion-MNIST"),
    "cnn": ("cnn", (1, 28, 28), 10, "Fashion-MNIST"),
    "vit": ("vit", (3, 32, 32), 10, "CIFAR-10"),
    "lm": ("lm", (64,), 97, "stdlib-text, block 64"),
    "cnn-paper1-3x3": ("cnn-paper1-3x3", (3, 256, 256), 101, "Food-101"),
}


def _best(fn: Any, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(key: str, res: str, reps: int) -> dict[str, Any]:
    name, shape, classes, _ = MODELS[key]
    torch.manual_seed(0)
    qc = QuantConfig(resolution=parse_resolution(res))
    model = build_model(name, qconfig=qc, input_shape=shape, num_classes=classes).eval()
    meta = {"model_spec": model_spec(name, qconfig=qc, input_shape=shape, num_classes=classes)}
    fp32_file = len(safetensors_bytes({k: v.contiguous() for k, v in model.state_dict().items()}))
    data = pack_model(model, meta)
    stats = unpack_bytes(data).stats()  # the same PackStats save_packed returns
    t_pack = _best(lambda: pack_model(model, meta), reps)
    t_unpack = _best(lambda: unpack_bytes(data).state_dict(), reps)
    n = qc.resolution.levels if qc.resolution.quantized else None
    g, b = group_for(n) if n else (None, None)
    mb = stats.fp32_state_bytes / 1e6
    return {
        "model": key, "resolution": str(qc.resolution), "N": n, "g": g, "b": b,
        "log2N": math.log2(n) if n else 32.0,
        "params": sum(p.numel() for p in model.parameters()),
        "params_quantized": stats.params_quantized,
        "fp32_file_bytes": fp32_file, "file_bytes": stats.file_bytes,
        "bits_per_weight": stats.bits_per_weight,
        "entropy_bits_per_weight": stats.entropy_bits_per_weight,
        "ratio": fp32_file / stats.file_bytes,
        "pack_MBps": mb / t_pack, "unpack_MBps": mb / t_unpack,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | res | g/b | log2 N | bits/w | entropy/w | quantised params | fp32 file "
            "| packed file | fp32/packed | pack MB/s | unpack MB/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        gb = f"{r['g']}/{r['b']}" if r["g"] else "-"
        bits = f"{r['bits_per_weight']:.3f}" if r["params_quantized"] else "-"
        ent = f"{r['entropy_bits_per_weight']:.3f}" if r["params_quantized"] else "-"
        lines.append(
            f"| {r['model']} | {r['resolution']} | {gb} | {r['log2N']:.3f} | {bits} | {ent} "
            f"| {r['params_quantized']:,} of {r['params']:,} | {r['fp32_file_bytes']:,} "
            f"| {r['file_bytes']:,} | {r['ratio']:.1f}x | {r['pack_MBps']:.0f} "
            f"| {r['unpack_MBps']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--resolutions", default=",".join(RESOLUTIONS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [bench(m, r, args.reps) for m in args.models.split(",")
            for r in args.resolutions.split(",")]
    cmd = "python bench/bench_pack.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"`{cmd.strip()}` (torch {torch.__version__}, {args.threads} torch thread(s), "
          f"best of {args.reps})\n")
    print("Models: " + "; ".join(f"{k}: {v[0]} on {v[1]}, {v[2]} classes ({v[3]})"
                                 for k, v in MODELS.items() if k in args.models.split(",")))
    print()
    print(table(rows))
    worst = max((r["bits_per_weight"] / r["log2N"] for r in rows
                 if r["params_quantized"] and r["resolution"] != "bnn"), default=float("nan"))
    print(f"\nworst bits/weight / log2 N: {worst:.4f}")
    return rows


if __name__ == "__main__":
    main()
