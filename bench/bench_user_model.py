"""Quantised training step of Hugging Face models nobody here wrote: bitsweep vs torchao QAT.

The models are examples/hf_models.py's factories (transformers, built from a config), at the
sizes below. Each is trained (forward, cross-entropy, backward, Adam step) as:

- ``fp32``: the model as transformers builds it (the baseline, 1.0);
- ``bitsweep N=4 (2 bits)``, ``bitsweep N=16 (4 bits)``: ``suite.quant.quantize_(model, ...)``,
  per-tensor ``gauss`` steps (the default), every weight layer (GPT-2's ``Conv1D`` projections
  and embeddings, the ResNet's convolutions and head, the ViT's patch convolution and linears);
- ``torchao int2``, ``torchao int4``: ``torchao.quantization.quantize_(model, QATConfig(
  weight_config=IntxFakeQuantizeConfig(torch.intK, granularity="per_channel",
  is_symmetric=True), step="prepare"))`` on ``nn.Linear`` and again with a filter on
  ``nn.Embedding``: all torchao's QAT converts. GPT-2's ``Conv1D`` layers are first replaced by the
  equivalent ``nn.Linear`` (weight transposed; ``fp32 (Conv1D as Linear)`` times that model
  unquantised), or torchao would fake-quantise only the LM head; the ResNet's and ViT's
  convolutions stay fp32 under torchao (it has no QAT convolution).

Variants alternate blocks of steps within one process (bench_train.time_steps); each figure is
the best block's mean step time, thread CPU time with one torch thread (robust to other
processes on a shared machine), as a ratio to fp32 measured in the same run; wall time beside
it. Goal: bitsweep's ratio <= torchao's at the same bit width.

    python bench/bench_user_model.py [--models gpt2 resnet vit] [--reps 5] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # run from a checkout, no install

from bench_train import time_steps  # noqa: E402

from examples import hf_models  # noqa: E402
from suite.quant import quantize_  # noqa: E402

Inputs = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]

MODELS: dict[str, tuple[Callable[[], nn.Module], Inputs, str]] = {
    "gpt2": (lambda: hf_models.gpt2((64,), 96, n_embd=128, n_layer=4, n_head=4),
             lambda g: (torch.randint(0, 96, (16, 64), generator=g),
                        torch.randint(0, 96, (16, 64), generator=g)),
             "GPT2LMHeadModel: 4 layers, n_embd 128, 4 heads, vocab 96, context 64; batch 16"),
    "resnet": (lambda: hf_models.resnet((3, 32, 32), 10, embedding_size=32,
                                        hidden_sizes=(32, 64, 128), depths=(1, 1, 1)),
               lambda g: (torch.randn(64, 3, 32, 32, generator=g),
                          torch.randint(0, 10, (64,), generator=g)),
               "ResNetForImageClassification: basic blocks 32-64-128, depths 1-1-1; batch 64 x "
               "3x32x32"),
    "vit": (lambda: hf_models.vit((3, 32, 32), 10, patch_size=4, hidden_size=128,
                                  num_hidden_layers=4, num_attention_heads=4),
            lambda g: (torch.randn(64, 3, 32, 32, generator=g),
                       torch.randint(0, 10, (64,), generator=g)),
            "ViTForImageClassification: 4 layers, hidden 128, 4 heads, patch 4; batch 64 x 3x32x32"),
}
BITSWEEP = {"bitsweep N=4 (2 bits)": "2", "bitsweep N=16 (4 bits)": "4"}
TORCHAO = {"torchao int2": 2, "torchao int4": 4}
MATCHES = (("bitsweep N=4 (2 bits)", "torchao int2"), ("bitsweep N=16 (4 bits)", "torchao int4"))


class Logits(nn.Module):
    """A Hugging Face model's output object -> its logits (what the training step needs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def conv1d_as_linear(model: nn.Module) -> nn.Module:
    """Every transformers ``Conv1D`` (weight (in, out)) replaced by the same ``nn.Linear``."""
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = nn.Linear(*child.weight.shape)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    linear.bias.copy_(child.bias)
                setattr(parent, name, linear)
    return model


def torchao_qat(model: nn.Module, bits: int) -> nn.Module:
    from torchao.quantization import quantize_ as ao_quantize_
    from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

    dtype = {2: torch.int2, 4: torch.int4}[bits]

    def config() -> QATConfig:
        weights = IntxFakeQuantizeConfig(dtype, granularity="per_channel", is_symmetric=True)
        return QATConfig(weight_config=weights, step="prepare")

    ao_quantize_(model, config())  # nn.Linear (torchao's default filter)
    ao_quantize_(model, config(), filter_fn=lambda m, _: isinstance(m, nn.Embedding))
    return model


def variants(name: str) -> dict[str, nn.Module]:
    build = MODELS[name][0]

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return build()

    out = {"fp32": fresh()}
    for label, resolution in BITSWEEP.items():
        model = fresh()
        quantize_(model, resolution)
        out[label] = model
    if name == "gpt2":
        out["fp32 (Conv1D as Linear)"] = conv1d_as_linear(fresh())
    try:
        for label, bits in TORCHAO.items():
            model = fresh()
            out[label] = torchao_qat(conv1d_as_linear(model) if name == "gpt2" else model, bits)
    except ImportError as err:
        print(f"torchao not available ({err}): bitsweep vs fp32 only")
    return {k: Logits(m).train() for k, m in out.items()}


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    _, inputs, description = MODELS[name]
    models = variants(name)
    x, y = inputs(torch.Generator().manual_seed(0))
    cpu, wall = time_steps(models, x, y, args.reps, args.steps)
    best = {k: min(v) for k, v in (cpu if args.threads == 1 else wall).items()}
    wall_best = {k: min(v) for k, v in wall.items()}
    ratio = {k: best[k] / best["fp32"] for k in best}
    wall_ratio = {k: wall_best[k] / wall_best["fp32"] for k in wall_best}
    timer = "thread CPU" if args.threads == 1 else "wall"
    print(f"\n## {name}: {description}")
    print(f"| variant | ms/step ({timer}) | x fp32 | x fp32 (wall) |")
    print("|---|---|---|---|")
    for key in models:
        print(f"| {key} | {1e3 * best[key]:.2f} | {ratio[key]:.3f} | {wall_ratio[key]:.3f} |")
    for ours, peer in MATCHES:
        if peer in ratio:
            verdict = "meets" if ratio[ours] <= ratio[peer] else "misses"
            print(f"- {ours}: {ratio[ours]:.3f}x vs {peer} {ratio[peer]:.3f}x ({verdict} the goal)")
    return {"description": description, "ms": {k: 1e3 * v for k, v in best.items()},
            "ratio": ratio, "wall_ratio": wall_ratio}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=tuple(MODELS))
    parser.add_argument("--reps", type=int, default=5, help="alternating blocks per variant")
    parser.add_argument("--steps", type=int, default=5, help="training steps per block")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # torchao's and transformers' import-time chatter
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch.set_num_threads(args.threads)
    import transformers

    try:
        import torchao

        ao = f"torchao {torchao.__version__}"
    except ImportError:
        ao = "no torchao"
    print("$ python bench/bench_user_model.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {ao}, "
          f"{args.threads} thread(s), {os.cpu_count()} cores")
    return {name: run(name, args) for name in args.models}


if __name__ == "__main__":
    main()
