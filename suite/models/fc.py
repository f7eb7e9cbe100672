"""Fully connected network on flattened images.

    flatten -> depth x [QuantLinear -> norm -> ReLU] -> QuantLinear head -> logits

Norm (``norm`` option): ``layer`` puts ``make_norm`` after each hidden layer (LayerNorm, its gain and
shift fp32; parameter-free at bnn), ``batch`` a BatchNorm1d, ``none`` nothing. ``auto`` is ``none``
at bnn, where each binary normalized layer already normalises its own output (paper 1), and
``layer`` otherwise, because low-bit layers change the scale of what they pass on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from suite.models.common import check_classes, check_depth, image_shape, resolve_norm, scaled
from suite.models.names import FAMILIES
from suite.quant import QuantConfig, QuantLinear, make_norm

# what the family takes, its norm choices besides auto, and its presets: suite/models/names.py
TASK, NORMS, PRESETS = FAMILIES["fc"].task, FAMILIES["fc"].norms, FAMILIES["fc"].presets


@dataclass(frozen=True)
class FCConfig:
    in_features: int
    num_classes: int
    hidden: tuple[int, ...]  # width of each hidden layer
    norm: str  # "layer" | "batch" | "none"


def make_config(preset: str, *, input_shape: tuple[int, ...], num_classes: int, width: float,
                depth: int | None, norm: str, qconfig: QuantConfig) -> FCConfig:
    base = PRESETS[preset]
    c, h, w = image_shape(input_shape, "fc")
    n_hidden = check_depth(depth) or base["depth"]
    return FCConfig(
        in_features=c * h * w,
        num_classes=check_classes(num_classes),
        hidden=(scaled(base["hidden"], width),) * n_hidden,
        norm=resolve_norm(norm, "fc", NORMS, "none", "layer", qconfig),
    )


class FC(nn.Module):
    def __init__(self, cfg: FCConfig, qconfig: QuantConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [nn.Flatten()]
        d_in = cfg.in_features
        for d in cfg.hidden:
            layers.append(QuantLinear(d_in, d, qconfig=qconfig))
            if cfg.norm == "layer":
                layers.append(make_norm(qconfig, d))
            elif cfg.norm == "batch":
                layers.append(nn.BatchNorm1d(d))
            layers.append(nn.ReLU())
            d_in = d
        layers.append(QuantLinear(d_in, cfg.num_classes, qconfig=qconfig))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
