"""Stored values and accounting: N=2 gives two values per tensor, bnn only 0/1, and
param_summary's fp32 remainder is exactly the non-quantised parameters."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, qconfig, tiny
from torch import nn

from suite.quant import QuantMixin, param_summary


def quant_layers(model: nn.Module) -> list[tuple[str, QuantMixin]]:
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantMixin)]
    assert layers
    return layers


@pytest.mark.parametrize("name", FAMILIES)
def test_two_levels_give_exactly_two_values_per_weight(name: str) -> None:
    torch.manual_seed(0)
    for lname, layer in quant_layers(tiny(name, "1")):
        with torch.no_grad():
            w = layer.quantized_weight()
        assert torch.unique(w).numel() == 2, lname
        assert 0.0 not in w, lname  # even N has no zero level
        stored = layer.quantized_tensors()["weight"]
        assert torch.equal(stored.values(), w), lname


@pytest.mark.parametrize("name", FAMILIES)
def test_bnn_weights_and_biases_are_zero_or_one(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name, "bnn")
    for lname, layer in quant_layers(model):
        with torch.no_grad():
            w, b = layer.quantized_weight(), layer.quantized_bias()
        assert set(torch.unique(w).tolist()) == {0.0, 1.0}, lname
        assert b is not None, f"{lname}: bnn layers carry a binary bias"
        assert set(torch.unique(b).tolist()) <= {0.0, 1.0}, lname
        stored = layer.quantized_tensors()
        assert set(stored) == {"weight", "bias"}, lname
        assert all(t.scale is None and int(t.indices.max()) <= 1 for t in stored.values())
    summary = param_summary(model)
    assert summary.params_fp32 == 0  # auto norm at bnn adds no parameters anywhere
    assert summary.params_quantized == summary.params == sum(p.numel() for p in model.parameters())


def non_quant_params(model: nn.Module) -> int:
    owned = {id(p) for _, m in quant_layers(model) for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in owned)


def quant_bias_params(model: nn.Module) -> int:
    return sum(m.bias.numel() for _, m in quant_layers(model) if m.bias is not None)


@pytest.mark.parametrize("name", FAMILIES)
def test_param_summary_fp32_remainder(name: str) -> None:
    # Default at N=5: biases stay fp32 (paper 2), so fp32 = norms + quant-layer biases.
    model = tiny(name, "2.32")
    s = param_summary(model)
    assert s.params == sum(p.numel() for p in model.parameters())
    assert s.params_quantized + s.params_fp32 == s.params
    assert non_quant_params(model) > 0  # LayerNorm / BatchNorm gains are fp32 and counted
    assert s.params_fp32 == non_quant_params(model) + quant_bias_params(model)
    # Biases quantised too: only the norm parameters remain fp32.
    model = tiny(name, qconfig=qconfig("2.32", quantize_bias=True))
    s = param_summary(model)
    assert s.params_quantized + s.params_fp32 == s.params
    assert s.params_fp32 == non_quant_params(model)
