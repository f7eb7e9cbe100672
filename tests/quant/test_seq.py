"""The ``seq`` scale rule: ParetoQ's stretched elastic quantiser on the suite's N-level grid."""

import math

import pytest
import torch
from torch import nn

from suite.pack.format import packed_to_model, read_packed, save_packed
from suite.quant import QuantConfig, QuantConv2d, QuantEmbedding, QuantLinear, QuantMixin, compute_scale
from suite.quant.fake import fake_quantize_stretched, stretched_step
from suite.quant.summary import param_summary

# 2..17 is every resolution the sweeps use; 31..257 cross the uint8/int32 index boundary.
SEQ_LEVELS = list(range(2, 18)) + [31, 32, 64, 255, 256, 257]


def _grid(n, s):
    return (torch.arange(n) - (n - 1) / 2) * s


def _paretoq_seq(w, alpha, n):
    """ParetoQ's StretchedElasticQuant (facebookresearch/ParetoQ, models/utils_quant.py) written
    with k = N/2 levels per side, so that num_bits = 2 is N = 4 and num_bits = 0 is N = 3:
    returns the forward value, the per-element dq/dalpha times the grad scale, and the
    straight-through mask."""
    k, shift = n / 2, (0.5 if n % 2 == 0 else 0.0)
    clip = 1 - 1e-2
    v = w / alpha
    q = (torch.round(torch.clamp(v, -clip, clip) * k - shift) + shift) / k
    qp = (k - shift) / k
    small, big = (v < -clip).float(), (v > clip).float()
    middle = 1 - small - big
    grad_scale = 1 / math.sqrt(w.numel() * max(1, (n - 1) // 2))
    return q * alpha, (big * qp - small * qp + middle * (q - v)) * grad_scale, middle


def _spread_layer(n, per_channel=False):
    """A linear layer whose weights cover [-m, m] evenly, so every one of the N bins of
    ``[-max|w|, max|w|]`` holds weights: shuffled over the whole tensor with m = 1, or one spread
    per row with its own m when the step is per channel."""
    torch.manual_seed(0)
    layer = QuantLinear(64, 48, qconfig=QuantConfig(resolution=f"N={n}", scale_rule="seq",
                                                    per_channel=per_channel))
    if per_channel:
        w = torch.linspace(-1, 1, 64).repeat(48, 1) * torch.linspace(0.5, 2, 48)[:, None]
    else:
        w = torch.linspace(-1, 1, 48 * 64)[torch.randperm(48 * 64)].reshape(48, 64)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.step.copy_(compute_scale(layer.weight, n, "seq", per_channel))
    return layer


@pytest.mark.parametrize("n", SEQ_LEVELS)
def test_seq_values_exactly_on_grid_and_every_level_reached(n):
    layer = _spread_layer(n)
    s = layer.step.detach()
    assert float(s) == pytest.approx(2 / n, rel=1e-6)  # alpha = max|w| = 1, s = 2 alpha / N
    w = layer.quantized_weight().detach()
    grid = _grid(n, s)
    assert bool(torch.isin(w, grid).all()), "forward values must be exactly on the grid"
    assert torch.equal(torch.unique(w), grid), "every level must be reached"
    assert bool((w == 0).any()) == (n % 2 == 1)
    qt = layer.quantized_tensors()["weight"]
    assert qt.indices.dtype == (torch.uint8 if n <= 256 else torch.int32)
    idx = qt.indices.to(torch.int64)
    assert int(idx.min()) == 0 and int(idx.max()) == n - 1
    assert len(torch.unique(idx)) == n
    assert torch.equal(qt.values(), w), "stored indices and step must rebuild the forward value"


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 9, 16, 17, 32])
def test_seq_per_channel_rows_on_their_own_grids(n):
    layer = _spread_layer(n, per_channel=True)
    s = layer.step.detach()
    assert s.shape == (48, 1)
    assert torch.allclose(s, 2 * layer.weight.detach().abs().amax(1, keepdim=True) / n)
    w = layer.quantized_weight().detach()
    for row, step in zip(w, s):
        assert torch.equal(torch.unique(row), _grid(n, step))
    qt = layer.quantized_tensors()["weight"]
    assert torch.equal(qt.scale, s) and torch.equal(qt.values(), w)


@pytest.mark.parametrize(("n", "levels"), [(3, (-2 / 3, 0, 2 / 3)), (4, (-0.75, -0.25, 0.25, 0.75)),
                                           (2, (-0.5, 0.5))])
def test_seq_levels_at_paretoq_stretched_positions(n, levels):
    # In units of ParetoQ's alpha (initialised to max|w|): the centres of N equal bins.
    w = torch.randn(200) * 0.3
    alpha = w.abs().max()
    q = fake_quantize_stretched(w, n, compute_scale(w, n, "seq")).detach()
    assert torch.allclose(torch.unique(q) / alpha, torch.tensor(levels), atol=1e-6)


@pytest.mark.parametrize("n", [3, 4, 2, 5, 8, 9, 16, 17])
@pytest.mark.parametrize("per_channel", [False, True])
def test_seq_forward_and_gradients_match_paretoq(n, per_channel):
    # N = 3 and 4 are the bit widths ParetoQ trains with SEQ; the others check the same formula
    # generalised. A step below its max|w| initialisation clips some weights.
    torch.manual_seed(n)
    w = (torch.randn(24, 40) * 0.05).requires_grad_(True)
    step = (0.8 * compute_scale(w, n, "seq", per_channel)).requires_grad_(True)
    upstream = torch.randn(24, 40)
    q = fake_quantize_stretched(w, n, step)
    q.backward(upstream)
    alpha = step.detach() * n / 2
    want, dq_dalpha, middle = _paretoq_seq(w.detach(), alpha, n)
    assert 0 < int((middle == 0).sum()) < w.numel() // 4
    assert torch.allclose(q.detach(), want, rtol=0, atol=1e-7)
    assert torch.equal(w.grad, upstream * middle)
    grad_alpha = (dq_dalpha * upstream).sum(dim=-1, keepdim=True) if per_channel else \
        (dq_dalpha * upstream).sum()
    # The suite learns s = 2 alpha / N, so its gradient is ParetoQ's times dalpha/ds = N/2.
    assert torch.allclose(step.grad, grad_alpha * n / 2, rtol=1e-4, atol=1e-7)


def test_seq_odd_n_clipped_weights_use_paretoq_qp_of_one():
    # ParetoQ's Qp for ternary is 1 (the clip value), not the outermost level 2/3: a clipped
    # weight pulls the step by N/2 = 1.5 steps, not by (N-1)/2 = 1. Even N uses the level.
    w = torch.tensor([10.0, -10.0, 10.0])
    for n, per_weight in ((3, 1.5), (4, 1.5), (5, 2.5), (8, 3.5)):
        step = torch.tensor(1.0, requires_grad=True)
        fake_quantize_stretched(w, n, step).sum().backward()
        scale = 1 / math.sqrt(3 * max(1, (n - 1) // 2))
        assert float(step.grad) == pytest.approx(per_weight * scale, rel=1e-6), n


@pytest.mark.parametrize("n", [2, 3, 4, 17])
def test_seq_step_is_a_learned_parameter(n):
    torch.manual_seed(0)
    layer = QuantLinear(32, 16, qconfig=QuantConfig(resolution=f"N={n}", scale_rule="seq"))
    assert isinstance(layer.step, nn.Parameter)
    assert any(p is layer.step for p in layer.parameters())
    assert torch.equal(layer.step.detach(), compute_scale(layer.weight, n, "seq"))
    max_abs = float(layer.weight.detach().abs().max())
    assert float(layer.step.detach()) == pytest.approx(2 * max_abs / n, rel=1e-6)
    x = torch.randn(8, 32)
    layer(x).square().mean().backward()
    assert layer.step.grad is not None and float(layer.step.grad) != 0.0
    assert bool(torch.isfinite(layer.step.grad).all())
    with torch.no_grad():
        layer.step -= 0.5 * layer.step.grad.sign() * layer.step  # a big move, to see the grid follow
    w = layer.quantized_weight().detach()
    assert bool(torch.isin(w, _grid(n, layer.step.detach())).all())
    # counted once, as the layer's fp32 grid step
    summary = param_summary(layer)
    assert summary.params == 32 * 16 + 16 + 1
    assert summary.params_quantized == 32 * 16


def test_seq_step_trained_to_zero_stays_on_a_valid_grid():
    # ParetoQ floors alpha at 1e-5 in the forward pass; the stored step is the floored one.
    layer = QuantLinear(8, 4, qconfig=QuantConfig(resolution="N=5", scale_rule="seq"))
    with torch.no_grad():
        layer.step.fill_(-1.0)
    w = layer.quantized_weight()
    floor = 2e-5 / 5
    assert bool(torch.isin(w.detach(), _grid(5, torch.tensor(floor))).all())
    w.sum().backward()
    assert bool(torch.isfinite(layer.step.grad).all())
    qt = layer.quantized_tensors()["weight"]
    assert float(qt.scale) == pytest.approx(floor)
    assert torch.equal(qt.values(), w.detach())
    assert torch.equal(stretched_step(torch.tensor(0.3), 5), torch.tensor(0.3))


class _SeqNet(nn.Module):
    def __init__(self, meta):
        super().__init__()
        spec = meta["model_spec"]
        qc = QuantConfig(resolution=spec["res"], scale_rule="seq", per_channel=spec["per_channel"])
        self.emb = QuantEmbedding(20, 6, qconfig=qc)
        self.conv = QuantConv2d(6, 8, 3, padding=1, qconfig=qc)
        self.fc = QuantLinear(8 * 4 * 4, 5, qconfig=qc)

    def forward(self, tokens):
        h = self.emb(tokens).reshape(-1, 4, 4, 6).permute(0, 3, 1, 2)
        return self.fc(torch.relu(self.conv(h)).flatten(1))


@pytest.mark.parametrize(("res", "per_channel"), [("N=2", False), ("N=3", True), ("N=4", False),
                                                  ("N=9", True), ("N=17", False)])
def test_seq_layers_pack_and_unpack_exactly(tmp_path, res, per_channel):
    torch.manual_seed(0)
    meta = {"model_spec": {"res": res, "per_channel": per_channel}}
    model = _SeqNet(meta)
    tokens = torch.randint(0, 20, (3, 16))
    steps_at_init = [m.step.detach().clone() for m in model.modules() if isinstance(m, QuantMixin)]
    for _ in range(3):  # move the steps off their initialisation (plain SGD: no torch.optim import)
        model.zero_grad()
        model(tokens).square().mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad
    learned = [m.step.detach() for m in model.modules() if isinstance(m, QuantMixin)]
    assert any(not torch.equal(a, b) for a, b in zip(steps_at_init, learned))
    model.eval()
    with torch.no_grad():
        want = model(tokens)
    path = tmp_path / "seq.bswp"
    save_packed(model, path, meta)
    packed = read_packed(path)
    n = int(res[2:])
    for name, module in model.named_modules():
        if isinstance(module, QuantMixin):
            qt = module.quantized_tensors()["weight"]
            got = packed.qtensors[f"{name}.weight"]
            assert got.n == n and torch.equal(got.indices, qt.indices.reshape(qt.shape))
            assert torch.equal(got.scale, qt.scale)
    kinds = {e["name"]: e["kind"] for e in packed.entries}
    assert kinds["fc.weight"] == "packed" and kinds["fc.step"] == "fp32"
    torch.manual_seed(123)  # the builder's own initialisation must not leak into the result
    rebuilt = packed_to_model(path, _SeqNet)
    with torch.no_grad():
        assert torch.equal(rebuilt(tokens), want)
