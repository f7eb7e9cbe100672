import pytest
import torch

from suite.quant import (
    SCALE_RULES,
    QuantConfig,
    QuantConv2d,
    QuantLinear,
    compute_scale,
    example_normalize,
    fake_binarize,
    fake_quantize,
    parse_resolution,
)
from suite.quant.fake import fake_quantize_learned, level_indices

LEVELS = [2, 3, 4, 5, 8, 9, 16, 17]


def _layer(n, rule, per_channel=False):
    torch.manual_seed(0)
    qc = QuantConfig(resolution=f"N={n}", scale_rule=rule, per_channel=per_channel)
    return QuantLinear(32, 16, qconfig=qc)


@pytest.mark.parametrize("rule", SCALE_RULES)
@pytest.mark.parametrize("n", LEVELS)
def test_at_most_n_values_on_grid_zero_iff_odd(n, rule):
    layer = _layer(n, rule)
    w = layer.quantized_weight().detach()
    values = torch.unique(w)
    assert len(values) <= n
    s = layer.step.detach() if layer.step is not None else compute_scale(layer.weight, n, rule)
    # The grid itself holds zero iff N is odd; for even N no weight can be 0.
    grid = (torch.arange(n) - (n - 1) / 2) * s
    assert bool(torch.isin(w, grid).all()), "forward values must be exactly on the grid"
    assert bool((grid == 0).any()) == (n % 2 == 1)
    if n % 2 == 0:
        assert not bool((w == 0).any())


@pytest.mark.parametrize("rule", SCALE_RULES)
def test_binary_never_becomes_ternary(rule):
    # Exact zeros are where sign(0) = 0 turns a binary net ternary in many BNN codebases.
    layer = _layer(2, rule)
    with torch.no_grad():
        layer.weight[:, :8] = 0.0
    w = layer.quantized_weight().detach()
    assert len(torch.unique(w)) == 2
    assert not bool((w == 0).any())
    zeros = torch.zeros(10)
    q = fake_quantize(zeros, 2, compute_scale(zeros, 2, "gauss"))
    assert not bool((q == 0).any())


@pytest.mark.parametrize("n", LEVELS)
def test_per_channel_scales(n):
    layer = _layer(n, "gauss", per_channel=True)
    w = layer.quantized_weight().detach()
    for row in w:
        assert len(torch.unique(row)) <= n
    assert layer.quantized_tensors()["weight"].scale.shape == (16, 1)


def test_straight_through_gradient_is_identity():
    w = torch.randn(5, 7, requires_grad=True)
    upstream = torch.randn(5, 7)
    q = fake_quantize(w, 5, compute_scale(w, 5, "gauss"))
    q.backward(upstream)
    assert torch.equal(w.grad, upstream)
    w.grad = None
    fake_binarize(w).backward(upstream)
    assert torch.equal(w.grad, upstream)


def test_learned_step_gets_lsq_gradient():
    torch.manual_seed(0)
    w = torch.randn(64, requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    q = fake_quantize_learned(w, 4, s)
    q.sum().backward()
    v = w.detach() / 0.5
    idx = level_indices(w.detach(), 4, torch.tensor(0.5))
    inside = (v + 1.5 >= -0.5) & (v + 1.5 <= 3.5)
    expected = ((idx - 1.5) - v * inside).sum() / (64 * 1.5) ** 0.5
    assert s.grad == pytest.approx(float(expected), rel=1e-5)
    assert torch.equal(w.grad, inside.float())


def test_fp32_mode_returns_weights_unchanged():
    layer = QuantLinear(8, 4, qconfig=QuantConfig(resolution="fp32"))
    assert layer.quantized_weight() is layer.weight
    assert layer.quantized_bias() is layer.bias
    x = torch.randn(3, 8)
    assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_more_levels_never_increase_gaussian_error():
    torch.manual_seed(0)
    w = torch.randn(200_000)
    errors = []
    for n in range(2, 18):
        q = fake_quantize(w, n, compute_scale(w, n, "gauss"))
        errors.append(float(((w - q) ** 2).mean()))
    assert all(b <= a for a, b in zip(errors, errors[1:])), errors
    # and 17 levels come close to the float tensor, unlike the clipped absmean grid
    assert errors[-1] < 0.012
    q = fake_quantize(w, 17, compute_scale(w, 17, "absmean"))
    assert float(((w - q) ** 2).mean()) > 5 * errors[-1]


def test_bias_flag():
    torch.manual_seed(0)
    fp_bias = QuantLinear(8, 4, qconfig=QuantConfig(resolution="2.32"))
    assert fp_bias.quantized_bias() is fp_bias.bias
    q_bias = QuantLinear(8, 4, qconfig=QuantConfig(resolution="2.32", quantize_bias=True))
    assert len(torch.unique(q_bias.quantized_bias().detach())) <= 5
    assert {c.name: c.bits for c in fp_bias.precision_counts()}["bias"] == 32


def test_bnn_layers_binary_mean_threshold_and_normalised():
    torch.manual_seed(0)
    qc = QuantConfig(resolution="bnn")
    lin = QuantLinear(20, 30, qconfig=qc)
    with torch.no_grad():
        lin.bias.normal_()
    w, b = lin.quantized_weight().detach(), lin.quantized_bias().detach()
    assert set(torch.unique(w).tolist()) <= {0.0, 1.0}
    assert set(torch.unique(b).tolist()) == {0.0, 1.0}
    assert torch.equal(w, (lin.weight > lin.weight.mean()).float())
    assert torch.equal(b, (lin.bias > lin.bias.mean()).float())
    y = lin(torch.randn(6, 20))
    assert torch.allclose(y.mean(-1), torch.zeros(6), atol=1e-5)
    assert torch.allclose(y.std(-1, unbiased=False), torch.ones(6), atol=1e-3)

    for axes, dims in (("chw", (1, 2, 3)), ("c", (1,)), ("hw", (2, 3))):
        conv = QuantConv2d(3, 8, 3, padding=1, qconfig=QuantConfig(resolution="bnn", conv_norm=axes))
        y = conv(torch.randn(2, 3, 5, 5))
        assert torch.allclose(y.mean(dims), torch.zeros(()), atol=1e-5)
        assert torch.allclose(y.std(dims, unbiased=False), torch.ones(()), atol=1e-3)


def test_example_normalize_zero_mean_unit_std():
    z = torch.randn(4, 10) * 7 + 3
    y = example_normalize(z, (-1,))
    assert torch.allclose(y.mean(-1), torch.zeros(4), atol=1e-5)


def test_quant_config_errors_name_the_value():
    with pytest.raises(ValueError, match="'nope'"):
        QuantConfig(scale_rule="nope")
    with pytest.raises(ValueError, match="'xy'"):
        QuantConfig(conv_norm="xy")
    with pytest.raises(ValueError, match="0.5"):
        QuantConfig(resolution="0.5")
    assert QuantConfig(resolution="2.32").resolution == parse_resolution(5.0 if False else "2.32")
