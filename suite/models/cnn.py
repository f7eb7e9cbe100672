"""Convolutional network: conv blocks, global average pool, dense head.

    blocks x [convs_per_block x (QuantConv2d k x k 'same' -> norm -> ReLU) -> 2x2 max-pool]
    -> global average pool -> dense x (QuantLinear -> ReLU) -> QuantLinear head -> logits

Every block but the last is followed by a 2x2 max-pool while the feature map is still at least 2
pixels, so one architecture runs on 8x8 digits, 28x28 and 32x32 images and 256x256 Food-101.

Norm (``norm`` option): ``batch`` puts a BatchNorm2d after each conv (the usual low-bit practice;
its gain and shift stay fp32 and are counted) and drops that conv's bias, which the BatchNorm shift
makes redundant. ``none`` adds nothing. ``auto`` is ``none`` at bnn, where each binary normalized
conv already normalises its own output (paper 1), and ``batch`` otherwise. The paper-1 presets
have exactly the paper's parameter count at bnn, and at fp32 with ``norm="none"``.

Presets ``cnn-paper1-3x3`` / ``-5x5`` are paper 1's Food-101 CNN as its reported parameter counts
require (5,132,165 / 13,505,925 with 101 classes): channels 32|64|128|256|512, two convs per
block, dense 512 -> 256. Algorithm 7 as printed (channels up to 256, dense 256 -> 256) gives
1,403,653 / 3,617,029 instead (docs/papers.md §1.5). The paper's fp32 baseline also had
dropout 0.4 / 0.3 after the dense layers; this module has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from suite.models.common import check_classes, check_depth, image_shape, resolve_norm, scaled
from suite.models.names import FAMILIES
from suite.quant import QuantConfig, QuantConv2d, QuantLinear

# what the family takes, its norm choices besides auto, and its presets: suite/models/names.py
TASK, NORMS, PRESETS = FAMILIES["cnn"].task, FAMILIES["cnn"].norms, FAMILIES["cnn"].presets


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int
    image_size: tuple[int, int]
    num_classes: int
    channels: tuple[int, ...]  # output channels of each block
    convs_per_block: int
    kernel: int
    dense: tuple[int, ...]  # hidden widths of the head
    norm: str  # "batch" | "none"


def make_config(preset: str, *, input_shape: tuple[int, ...], num_classes: int, width: float,
                depth: int | None, norm: str, qconfig: QuantConfig) -> CNNConfig:
    base = PRESETS[preset]
    c, h, w = image_shape(input_shape, preset)
    channels = list(base["channels"])
    n_blocks = check_depth(depth) or len(channels)
    while len(channels) < n_blocks:  # deeper than the preset: keep doubling, as the presets do
        channels.append(channels[-1] * 2)
    return CNNConfig(
        in_channels=c,
        image_size=(h, w),
        num_classes=check_classes(num_classes),
        channels=tuple(scaled(ch, width) for ch in channels[:n_blocks]),
        convs_per_block=base["convs_per_block"],
        kernel=base["kernel"],
        dense=tuple(scaled(d, width) for d in base["dense"]),
        norm=resolve_norm(norm, preset, NORMS, "none", "batch", qconfig),
    )


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig, qconfig: QuantConfig) -> None:
        super().__init__()
        self.cfg = cfg
        batch = cfg.norm == "batch"
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        h, w = cfg.image_size
        for i, c in enumerate(cfg.channels):
            for _ in range(cfg.convs_per_block):
                layers.append(QuantConv2d(c_in, c, cfg.kernel, padding="same", bias=not batch,
                                          qconfig=qconfig))
                if batch:
                    layers.append(nn.BatchNorm2d(c))
                layers.append(nn.ReLU())
                c_in = c
            if i < len(cfg.channels) - 1 and min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)

        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        for d in cfg.dense:
            head += [QuantLinear(c_in, d, qconfig=qconfig), nn.ReLU()]
            c_in = d
        head.append(QuantLinear(c_in, cfg.num_classes, qconfig=qconfig))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
