"""Quantisation under mixed precision (RunConfig.amp): the grid step, the rounding to levels and
the bnn threshold are computed in fp32 from the fp32 shadow weights, so a layer's quantised
weight under autocast is bit for bit the one without; only the matmul that uses it runs in the
low-precision dtype."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from suite.quant import SCALE_RULES, QuantConfig, QuantConv2d, QuantEmbedding, QuantLinear, example_normalize

# 300 x 257 = 77,100 weights: above scale._FAST_STD_MIN, so gauss takes its two-mean std path too
PRECISIONS = ("1", "1.58", "2.32", "4.09")
CASES = [(p, rule, per_channel) for p in PRECISIONS for rule in SCALE_RULES
         for per_channel in (False, True)] + [("bnn", "gauss", False)]


def _layers(precision: str, rule: str, per_channel: bool, device: str) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    qc = QuantConfig(resolution=precision, scale_rule=rule, per_channel=per_channel,
                     quantize_bias=True)
    layers = {"linear": QuantLinear(300, 257, qconfig=qc), "conv": QuantConv2d(8, 16, 3, qconfig=qc),
              "embedding": QuantEmbedding(50, 32, qconfig=qc)}
    return {name: layer.to(device) for name, layer in layers.items()}


def _quantised(layer: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {"weight": layer.quantized_weight().detach()}
    if (bias := layer.quantized_bias()) is not None:
        out["bias"] = bias.detach()
    for name, qt in layer.quantized_tensors().items():
        out[f"{name}.indices"] = qt.indices
        if qt.scale is not None:
            out[f"{name}.scale"] = qt.scale
    return out


def _assert_exact_under_autocast(device: str, dtype: torch.dtype) -> None:
    for precision, rule, per_channel in CASES:
        for name, layer in _layers(precision, rule, per_channel, device).items():
            plain = _quantised(layer)
            with torch.autocast(device, dtype=dtype):
                mixed = _quantised(layer)
            case = (precision, rule, per_channel, name)
            assert plain.keys() == mixed.keys(), case
            for key, value in plain.items():
                assert mixed[key].dtype == value.dtype, (*case, key, mixed[key].dtype)
                assert torch.equal(mixed[key], value), (*case, key)


def test_quantized_weight_is_exact_under_cpu_bf16_autocast() -> None:
    _assert_exact_under_autocast("cpu", torch.bfloat16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_quantized_weight_is_exact_under_cuda_autocast(dtype) -> None:
    _assert_exact_under_autocast("cuda", dtype)


@pytest.mark.parametrize("precision", ["2.32", "bnn"])
def test_the_only_rounding_is_autocast_casting_the_grid_weight(precision) -> None:
    """The mixed forward equals a bf16 linear of the exact fp32 grid weight (plus bnn's
    normalisation in fp32): nothing inside the quantiser is rounded to bf16 first."""
    layer = _layers(precision, "gauss", False, "cpu")["linear"]
    x = torch.randn(4, 300, generator=torch.Generator().manual_seed(1))
    w, b = layer.quantized_weight().detach(), layer.quantized_bias()
    expected = F.linear(x.bfloat16(), w.bfloat16(), None if b is None else b.detach().bfloat16())
    if precision == "bnn":
        expected = example_normalize(expected.float(), (-1,))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        got = layer(x)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)


def test_bnn_normalisation_runs_in_fp32_under_autocast() -> None:
    """As CUDA's autocast runs layer_norm: in fp32, the output too (normalised in bf16, a
    unit-variance output is off by up to 3e-2)."""
    z = torch.randn(8, 512, generator=torch.Generator().manual_seed(2)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = example_normalize(z, (-1,))
    assert got.dtype == torch.float32
    assert torch.equal(got, example_normalize(z.float(), (-1,)))


@pytest.mark.parametrize("rule", ["lsq", "seq"])
def test_learned_steps_get_fp32_gradients_under_autocast(rule) -> None:
    layer = _layers("2.32", rule, False, "cpu")["linear"]
    x = torch.randn(16, 300, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = layer(x).float().square().mean()
    loss.backward()
    for p in (layer.step, layer.weight):
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()
    assert layer.step.grad.abs().sum() > 0
