"""quantize_ on models bitsweep did not build: conversion in place, per-layer rules, keep_fp32
policies, tied weights, the summary's accounting, and registered layers and scale rules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from suite.quant import (
    QuantConfig,
    QuantConv1d,
    QuantConv2d,
    QuantEmbedding,
    QuantLinear,
    QuantMixin,
    ScaleRule,
    format_table,
    get_scale_rule,
    layer_table,
    param_summary,
    quantize_,
    register_layer,
    register_scale_rule,
    scale_rules,
    swap_class,
)
from suite.quant.policy import parse_rules, resolve
from suite.quant.resolution import FP32, levels, parse_resolution


class Gain(nn.Module):
    """A layer type nothing converts, holding a parameter."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class Hand(nn.Module):
    """Every built-in converted type plus a norm and an unknown parametrised layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.conv1 = nn.Conv1d(8, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.LayerNorm(6)
        self.gain = Gain(6)
        self.head = nn.Linear(6 + 4, 5)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        a = self.conv1(self.embed(tokens).transpose(1, 2)).mean(-1)   # (B, 6)
        a = self.gain(self.norm(a))
        b = self.conv2(image).mean((-1, -2))                          # (B, 4)
        return self.head(torch.cat([a, b], -1))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 20, (3, 7), generator=g), torch.randn(3, 1, 6, 6, generator=g)


def _grid(n: int, step: torch.Tensor) -> torch.Tensor:
    return (torch.arange(n) - (n - 1) / 2) * step


def test_converts_each_type_in_place_keeping_weights_and_lists_the_rest_as_fp32() -> None:
    torch.manual_seed(0)
    model = Hand().to(torch.float64)
    params = {name: p for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in params.items()}
    embed = model.embed
    summary = quantize_(model, "2")
    assert model.embed is embed  # the same object: references to it stay valid
    assert type(model.embed) is QuantEmbedding
    assert type(model.conv1) is QuantConv1d
    assert type(model.conv2) is QuantConv2d
    assert type(model.head) is QuantLinear
    assert type(model.gain) is Gain and type(model.norm) is nn.LayerNorm
    for name, p in model.named_parameters():
        assert p is params[name] and p.dtype == torch.float64
        assert torch.equal(p.detach(), before[name])
    fp32 = {p.name: p.reason for p in summary.full_precision}
    assert set(fp32) == {"conv1.bias", "conv2.bias", "head.bias", "norm.weight", "norm.bias",
                         "gain.gain"}
    assert "Gain has no converter" in fp32["gain.gain"]
    assert "bias" in fp32["head.bias"]
    assert summary.resolutions == dict.fromkeys(("embed", "conv1", "conv2", "head"), "2")
    text = str(summary)
    assert "gain.gain (6): Gain has no converter" in text
    for name in ("embed", "conv1", "conv2", "head", "norm", "gain"):
        assert any(line.startswith(name) for line in text.splitlines())


def test_forward_values_are_on_each_layers_grid() -> None:
    torch.manual_seed(0)
    model = Hand()
    tokens, image = _inputs()
    quantize_(model, "2.32")
    for layer in (model.embed, model.conv1, model.conv2, model.head):
        w = layer.quantized_weight().detach()
        step = layer._scale(layer.weight)
        assert torch.isin(w, _grid(5, step)).all()
        assert len(torch.unique(w)) > 1
    # the model's output is the same model run on those grid values
    q = {m: m.quantized_weight().detach() for m in (model.embed, model.conv1, model.conv2,
                                                     model.head)}
    a = F.conv1d(F.embedding(tokens, q[model.embed]).transpose(1, 2), q[model.conv1],
                 model.conv1.bias, padding=1).mean(-1)
    a = model.gain(model.norm(a))
    b = F.conv2d(image, q[model.conv2], model.conv2.bias, padding=1).mean((-1, -2))
    expected = F.linear(torch.cat([a, b], -1), q[model.head], model.head.bias)
    assert torch.equal(model(tokens, image), expected)


def test_summary_counts_quantised_and_fp32_parameters_by_hand() -> None:
    model = Hand()
    summary = quantize_(model, "1.58", per_channel=True)
    weights = 20 * 8 + 6 * 8 * 3 + 4 * 1 * 9 + 5 * 10
    fp32 = 6 + 4 + 5 + 6 + 6 + 6  # conv1/conv2/head biases, LayerNorm gain and shift, Gain
    scales = 20 + 6 + 4 + 5  # one fp32 step per output channel
    assert summary.params == weights + fp32
    assert summary.params_quantized == weights
    assert summary.share_quantized == pytest.approx(weights / (weights + fp32))
    assert summary.bytes == pytest.approx(weights * math.log2(3) / 8 + 4 * (fp32 + scales))
    assert summary.fp32_bytes == 4 * (weights + fp32)
    totals = param_summary(model)
    assert totals.params_quantized == summary.params_quantized
    assert totals.quantized_bytes == pytest.approx(summary.bytes)
    head = next(r for r in summary.layers if r.name == "head")
    assert (head.type, head.params, head.resolution) == ("QuantLinear", 55, "1.58")
    assert head.bytes == pytest.approx(50 * math.log2(3) / 8 + 4 * 5 + 4 * 5)
    gain = next(r for r in summary.layers if r.name == "gain")
    assert (gain.params, gain.resolution, gain.bits, gain.bytes) == (6, "fp32", 32.0, 24.0)
    table = format_table(layer_table(model))
    assert table.splitlines()[-1].split()[:2] == ["total", f"{weights + fp32:,}"]


def test_layer_rules_first_match_wins_glob_and_regex() -> None:
    model = Hand()
    summary = quantize_(model, "1", layers=["conv*=fp32", "conv2=4", {"re:h.a+d": "N=7"},
                                            "blocks.*=2"])
    assert summary.resolutions == {"embed": "1", "conv1": "fp32", "conv2": "fp32", "head": "N=7"}
    assert summary.notes == ("rule blocks.*=2 matches no weight layer",)
    assert summary.reasons["conv2"] == "rule conv*=fp32"
    assert model.conv1.qconfig.resolution == FP32 and model.head.qconfig.resolution == levels(7)
    fp32 = {p.name: p.reason for p in summary.full_precision}
    assert fp32["conv1.weight"].startswith("layer at fp32 (rule conv*=fp32)")
    # an fp32 layer computes exactly what the plain layer did
    x = torch.randn(2, 8, 5)
    assert torch.equal(model.conv1(x), F.conv1d(x, model.conv1.weight, model.conv1.bias, padding=1))


@pytest.mark.parametrize(("policy", "fp32"), [
    ("none", set()), ("first", {"embed"}), ("last", {"head"}), ("ends", {"embed", "head"}),
])
def test_keep_fp32_policies_pick_first_and_last_weight_layer_in_module_order(policy, fp32) -> None:
    model = Hand()
    summary = quantize_(model, "2", keep_fp32=policy, layers=["embed=4", "head=4"])
    got = {name for name, res in summary.resolutions.items() if res == "fp32"}
    assert got == fp32  # the policy wins over the rules
    for name in fp32:
        assert summary.reasons[name] == f"keep_fp32={policy}"


def test_policy_resolution_is_plain_python() -> None:
    rules = parse_rules(["a.*=fp32", "a.b=1"])
    plan = resolve(["a.b", "c", "d"], levels(4), rules, "last")
    assert plan == {"a.b": (FP32, "rule a.*=fp32"), "c": (levels(4), "default"),
                    "d": (FP32, "keep_fp32=last")}
    for bad in (["nopattern"], ["x=7bits"], [{"re:(": "1"}], [{"a=b": "1"}]):
        with pytest.raises(ValueError):
            parse_rules(bad)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(30, 8)
        self.mid = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 30, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.mid(self.wte(idx)))


@pytest.mark.parametrize("rule", ["gauss", "lsq", "seq"])
def test_tied_weights_stay_tied_and_quantise_alike(rule) -> None:
    torch.manual_seed(0)
    model = Tied()
    summary = quantize_(model, "2", scale_rule=rule, per_channel=True, layers=["lm_head=fp32"])
    assert model.lm_head.weight is model.wte.weight
    assert summary.resolutions["lm_head"] == "2"  # the tie wins over the rule, and says so
    assert any("lm_head.weight is tied to wte.weight" in n for n in summary.notes)
    if rule != "gauss":
        assert model.lm_head.step is model.wte.step
    assert torch.equal(model.lm_head.quantized_weight(), model.wte.quantized_weight())
    # counted once: 240 quantised weights of the table, the middle layer's 64
    assert summary.params == 30 * 8 + 64 + 8
    assert summary.params_quantized == 30 * 8 + 64


def test_a_tied_tensor_read_unquantised_elsewhere_is_listed() -> None:
    class Reader(nn.Module):
        def __init__(self, weight: nn.Parameter) -> None:
            super().__init__()
            self.table = weight

    model = Tied()
    model.reader = Reader(model.wte.weight)
    summary = quantize_(model, "2")
    reason = {p.name: p.reason for p in summary.full_precision}["reader.table"]
    assert "tied to wte.weight" in reason and "unquantised" in reason


class TransposedLinear(nn.Module):
    """GPT-2's Conv1D, as Hugging Face writes it: weight (in, out), y = x @ W + b."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(
            *x.shape[:-1], self.nf)


class QuantTransposedLinear(QuantMixin, TransposedLinear):
    out_axis = 1  # the weight's output channels are its columns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.quantized_bias(), x.view(-1, x.size(-1)),
                           self.quantized_weight()).view(*x.shape[:-1], self.nf)


def test_a_registered_layer_type_is_converted_with_its_out_axis() -> None:
    register_layer(TransposedLinear, swap_class(QuantTransposedLinear))
    torch.manual_seed(0)
    model = nn.Sequential(TransposedLinear(6, 4), nn.ReLU(), TransposedLinear(3, 6))
    summary = quantize_(model, "2", per_channel=True)
    assert all(isinstance(model[i], QuantTransposedLinear) for i in (0, 2))
    assert summary.params_quantized == 4 * 6 + 6 * 3
    w = model[0].quantized_weight().detach()
    step = model[0]._scale(model[0]._channels_first(model[0].weight))  # (out, 1)
    assert step.shape == (6, 1)
    for col, s in zip(w.T, step):  # each output column on its own grid
        assert torch.isin(col, _grid(4, s)).all()
    x = torch.randn(5, 4)
    assert torch.equal(model[0](x), x @ w + model[0].bias)


def test_hugging_face_gpt2_conv1d_is_converted_lazily_and_packs() -> None:
    transformers = pytest.importorskip("transformers")
    from suite.pack.format import pack_model, unpack_bytes

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=12)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    summary = quantize_(model, "1.58", per_channel=True, keep_fp32="last")
    from suite.quant.hf import QuantHFConv1D

    convs = [m for m in model.modules() if type(m).__name__ == "QuantHFConv1D"]
    assert len(convs) == 2 * 4 and all(isinstance(m, QuantHFConv1D) for m in convs)
    assert model.lm_head.weight is model.transformer.wte.weight
    # lm_head is the last weight layer; its tie to wte (the first) keeps both quantised
    assert summary.resolutions["lm_head"] == "1.58"
    assert any("lm_head.weight is tied" in n for n in summary.notes)
    attn = model.transformer.h[0].attn.c_attn
    w = attn.quantized_weight().detach()
    x = torch.randn(2, 3, 16)
    assert torch.equal(attn(x), torch.addmm(attn.bias, x.view(-1, 16), w).view(2, 3, -1))
    packed = unpack_bytes(pack_model(model, {}))
    state = packed.state_dict()
    assert torch.equal(state["transformer.h.0.attn.c_attn.weight"], w)
    assert {e["name"]: e["kind"] for e in packed.entries}["lm_head.weight"] == "alias"


def test_reconfigures_layers_already_quantised() -> None:
    layer = QuantLinear(4, 3, qconfig=QuantConfig(resolution="2", scale_rule="lsq"))
    model = nn.Sequential(layer)
    quantize_(model, "1", scale_rule="gauss")
    assert model[0] is layer and layer.qconfig.resolution == levels(2) and layer.step is None


def test_a_user_scale_rule_is_one_registration_away() -> None:
    def twice_absmean(w: torch.Tensor, n: int, per_channel: bool) -> torch.Tensor:
        return (2 * w.abs().mean() * 2 / (n - 1)).clamp_min(1e-8)

    rule = register_scale_rule(ScaleRule("test-twice-absmean", twice_absmean))
    assert get_scale_rule("test-twice-absmean") is rule and "test-twice-absmean" in scale_rules()
    with pytest.raises(ValueError, match="already registered"):
        register_scale_rule(ScaleRule("test-twice-absmean", twice_absmean))
    with pytest.raises(ValueError, match="built-in"):
        register_scale_rule(ScaleRule("gauss", twice_absmean), replace=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8))
    quantize_(model, "2", scale_rule="test-twice-absmean")
    w = model[0].weight
    expected = _grid(4, 2 * w.detach().abs().mean() * 2 / 3)
    q = model[0].quantized_weight()
    assert torch.isin(q.detach(), expected).all()
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # the default quantiser: straight through


def test_a_learned_user_rule_trains_its_step() -> None:
    from suite.quant.fake import fake_quantize_learned

    register_scale_rule(ScaleRule("test-learned-absmax", lambda w, n, pc: w.abs().amax() * 2 / (n - 1),
                                  learned=True, quantizer=fake_quantize_learned), replace=True)
    layer = nn.Linear(8, 8)
    quantize_(nn.Sequential(layer), "2", scale_rule="test-learned-absmax")
    assert isinstance(layer.step, nn.Parameter)
    assert torch.equal(layer.step.detach(), layer.weight.detach().abs().amax() * 2 / 3)
    layer(torch.randn(4, 8)).pow(2).sum().backward()
    assert layer.step.grad is not None and layer.step.grad.abs().sum() > 0


def test_unknown_rule_and_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scale rule 'nope'"):
        quantize_(nn.Linear(2, 2), "2", scale_rule="nope")
    with pytest.raises(ValueError, match="keep_fp32"):
        quantize_(nn.Linear(2, 2), "2", keep_fp32="middle")
    with pytest.raises(TypeError):
        quantize_("not a model", "2")  # type: ignore[arg-type]
    assert parse_resolution("fp32") == FP32


class Scaled(nn.Module):
    """A layer whose converter builds a new QuantLinear instead of changing its class."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Parameter(torch.randn(3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.inner.T


def _new_linear(layer: Scaled, qconfig: QuantConfig) -> nn.Module:
    new = QuantLinear(3, 3, bias=False, qconfig=qconfig)
    with torch.no_grad():
        new.weight.copy_(layer.inner)
    new.set_qconfig(qconfig)  # a learned step starts from the copied weights
    return new


def test_a_converter_may_return_a_new_module_put_wherever_the_old_one_was() -> None:
    register_layer(Scaled, _new_linear)
    shared = Scaled()
    model = nn.Sequential(shared, nn.ReLU(), shared)  # one module registered twice
    quantize_(model, "2")
    assert isinstance(model[0], QuantLinear) and model[2] is model[0]
    assert torch.equal(model[0].weight.detach(), shared.inner.detach())
    with pytest.raises(TypeError, match="model itself"):
        quantize_(Scaled(), "2")
