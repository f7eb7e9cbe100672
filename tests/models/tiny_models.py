"""Tiny model builders shared by the model tests (a plain module, not a conftest, so its name
cannot clash with tests/data/conftest.py when both directories are collected)."""

from __future__ import annotations

import torch
from torch import nn

from suite.models import build_model, model_task
from suite.quant import QuantConfig, parse_resolution

IMAGE_SHAPE = (1, 8, 8)
IMAGE_CLASSES = 10
LM_SHAPE = (12,)  # max_len
VOCAB = 20
FAMILIES = ("fc", "cnn", "vit", "lm")
RESOLUTIONS = ("fp32", "1", "2.32", "bnn")  # fp32, N=2, N=5, binary normalized


def qconfig(resolution: str, **kw: object) -> QuantConfig:
    return QuantConfig(resolution=parse_resolution(resolution), **kw)


def tiny(name: str, resolution: str = "fp32", **kw: object) -> nn.Module:
    shape, classes = (LM_SHAPE, VOCAB) if model_task(name) == "text" else (IMAGE_SHAPE,
                                                                          IMAGE_CLASSES)
    kw.setdefault("width", 0.5)
    return build_model(name, qconfig=kw.pop("qconfig", None) or qconfig(resolution),
                       input_shape=shape, num_classes=classes, **kw)


def tiny_input(name: str, batch: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if model_task(name) == "text":
        return torch.randint(0, VOCAB, (batch, LM_SHAPE[0]), generator=g)
    return torch.randn(batch, *IMAGE_SHAPE, generator=g)
