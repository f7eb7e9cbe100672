"""Every family runs forward and backward at fp32, N=2, N=5 and bnn, and all weights train."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, IMAGE_CLASSES, LM_SHAPE, RESOLUTIONS, VOCAB, tiny, tiny_input
from torch import nn

from suite.models import model_task
from suite.quant import QuantMixin

VARIANTS = [(f, r, "auto") for f in FAMILIES for r in RESOLUTIONS] + [
    ("fc", "2.32", "batch"), ("fc", "fp32", "none"), ("cnn", "bnn", "batch"),
    ("cnn", "2.32", "none"), ("vit", "bnn", "pre"), ("vit", "fp32", "post"),
    ("lm", "fp32", "pre"), ("lm", "bnn", "pre"),
]


@pytest.mark.parametrize(("name", "resolution", "norm"), VARIANTS)
def test_forward_backward_reaches_every_parameter(name: str, resolution: str, norm: str) -> None:
    torch.manual_seed(0)
    model = tiny(name, resolution, norm=norm)
    x = tiny_input(name)
    logits = model(x)
    if model_task(name) == "text":
        assert logits.shape == (3, LM_SHAPE[0], VOCAB)
    else:
        assert logits.shape == (3, IMAGE_CLASSES)
    assert torch.isfinite(logits).all()
    target = torch.randint(0, logits.shape[-1], logits.shape[:-1])
    nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"


@pytest.mark.parametrize("name", FAMILIES)
def test_every_weight_bearing_layer_is_quantised(name: str) -> None:
    plain = (nn.Linear, nn.Conv2d, nn.Embedding, nn.MultiheadAttention)
    for mname, module in tiny(name, "2.32").named_modules():
        if isinstance(module, plain):
            assert isinstance(module, QuantMixin), f"{mname} is a plain {type(module).__name__}"
        elif not isinstance(module, QuantMixin):
            # Only normalisation layers may own parameters outside the quant layers.
            own = list(module.parameters(recurse=False))
            assert not own or isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)), \
                f"{mname} ({type(module).__name__}) owns non-quantised parameters"


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("name", ["fc", "cnn", "vit", "cnn-paper1-3x3"])
def test_image_models_take_common_image_sizes(name: str, shape: tuple[int, int, int]) -> None:
    from suite.models import build_model
    from suite.quant import QuantConfig

    width = 0.125 if name.startswith("cnn-paper1") else 0.5
    model = build_model(name, qconfig=QuantConfig("bnn"), input_shape=shape, num_classes=7,
                        width=width)
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_vit_patch_size_follows_image_size() -> None:
    from suite.models.vit import patch_size

    assert [patch_size(s, s) for s in (8, 28, 32, 256)] == [2, 4, 4, 32]


def test_lm_accepts_shorter_sequences_and_rejects_longer() -> None:
    model = tiny("lm")
    assert model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, VOCAB)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(2, LM_SHAPE[0] + 1, dtype=torch.long))
