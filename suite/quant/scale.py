"""Scale rules: where the N-level grid sits on the shadow weights.

The grid is ``(i - (N-1)/2) * s``. The rule choosing ``s`` decides the science: a grid whose range
does not grow with N clips the large weights, so 4 bits buys nothing over 1 (docs/papers.md §3.2). Rules:

``gauss`` (default)
    ``s = c(N) * std(w)`` where ``c(N)`` is the step of the uniform N-level quantiser with least mean
    squared error for a unit Gaussian. The range grows with N (half-range 0.80 sigma at N=2, 2.7 sigma
    at N=17), and the error of a Gaussian tensor never grows with N.
``absmean``
    half-range = mean|w| for every N (N=2 is XNOR-Net's alpha, N=3 is BitNet b1.58's absmean).
    Kept because it is what many codebases do, and to show why it fails at high N.
``absmax``
    half-range = max|w|: no clipping at all, coarse steps when the tensor has outliers.
``lsq``
    learned step size (Esser et al., LSQ), initialised from ``gauss`` and trained with the LSQ
    gradient; the step is an fp32 parameter of the layer.
``seq``
    ParetoQ's stretched elastic quantiser (Liu et al. 2025, arXiv 2502.02631; ``StretchedElasticQuant``
    in facebookresearch/ParetoQ ``models/utils_quant.py``). ParetoQ learns a clip value ``alpha`` and
    cuts ``[-alpha, alpha]`` into N equal bins with a level at each bin's centre, so its levels are
    this suite's grid with ``s = 2 * alpha / N`` (the outermost level sits half a step inside the
    clip). The layer learns ``s`` itself, initialised as ParetoQ initialises ``alpha``: ``max|w|``,
    i.e. ``s = 2 * max|w| / N``. Its gradient (``fake.fake_quantize_stretched``) is ParetoQ's, carried
    over to ``s`` by the chain rule. One rule for every N >= 2, where ParetoQ uses SEQ only at N = 3
    and 4 (1.58 and 2 bits) and other quantisers at 1, 3 and 4 bits: docs/papers.md §3.3.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch

from suite.quant.fake import (
    fake_quantize,
    fake_quantize_learned,
    fake_quantize_stretched,
    stretched_step,
)
from suite.quant.names import SCALE_RULES  # noqa: F401 - the built-in rules' names, without torch

# The rules themselves are the registered objects below.
DEFAULT_SCALE_RULE = "gauss"
_MIN_SCALE = 1e-8  # an all-zero tensor still gets a non-degenerate grid


@dataclass(frozen=True)
class ScaleRule:
    """Where a rule puts the N-level grid, and how a layer quantises with it.

    ``step(w, n, per_channel)`` returns the grid step ``s`` of ``w`` (a scalar, or shape
    (C, 1, ...) per output channel); for a ``learned`` rule it is the initial value of the layer's
    ``step`` parameter, otherwise it is recomputed from the weights at every forward pass.
    ``quantizer(w, n, s)`` returns the forward values (on the grid) with the rule's gradients;
    None: round to the nearest level, identity gradient for ``w`` (``fake.fake_quantize``). A
    learned rule's quantizer must pass a gradient to ``s``. ``grid_step(s, n)``: the step the
    forward pass actually uses from the stored one (``seq`` floors it); None: ``s`` itself.
    ``workspace``: ``step`` accepts a ``workspace=`` scratch tensor shaped like ``w``."""

    name: str
    step: Callable[..., torch.Tensor]
    learned: bool = False
    quantizer: Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor] | None = None
    grid_step: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    workspace: bool = False

    def initial_step(self, w: torch.Tensor, n: int, per_channel: bool = False, *,
                     workspace: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            if self.workspace:
                return self.step(w, n, per_channel, workspace=workspace)
            return self.step(w, n, per_channel)

    def forward_step(self, step: torch.Tensor, n: int) -> torch.Tensor:
        """The step the forward pass quantises with, from the stored (learned) one."""
        return step if self.grid_step is None else self.grid_step(step, n)

    def quantize(self, w: torch.Tensor, n: int, step: torch.Tensor, *,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """Forward values of ``w`` on the grid of ``step``; ``out``: a fresh buffer for the
        default quantiser to write into."""
        if self.quantizer is None:
            return fake_quantize(w, n, step, out=out)
        return self.quantizer(w, n, step)


_RULES: dict[str, ScaleRule] = {}


def register_scale_rule(rule: ScaleRule, *, replace: bool = False) -> ScaleRule:
    """Make ``rule`` selectable by its name (``QuantConfig(scale_rule=...)``, ``quantize_``).

    Example, a grid whose half-range is twice the mean absolute weight::

        register_scale_rule(ScaleRule("absmean2", lambda w, n, per_channel:
                                      (2 * w.abs().mean() * 2 / (n - 1)).clamp_min(1e-8)))
    """
    if not isinstance(rule, ScaleRule):
        raise TypeError(f"register_scale_rule takes a ScaleRule, got {type(rule).__name__}")
    if not isinstance(rule.name, str) or not rule.name:
        raise ValueError(f"a scale rule needs a non-empty name, got {rule.name!r}")
    if rule.name in _RULES and not replace:
        raise ValueError(f"scale rule {rule.name!r} is already registered; pass replace=True "
                         "to replace it")
    if rule.name in SCALE_RULES and replace:
        raise ValueError(f"{rule.name!r} is a built-in scale rule and cannot be replaced")
    _RULES[rule.name] = rule
    return rule


def scale_rules() -> tuple[str, ...]:
    """Every registered rule's name, the built-in ones first."""
    return tuple(_RULES)


def get_scale_rule(name: str | ScaleRule) -> ScaleRule:
    if isinstance(name, ScaleRule):
        return name
    rule = _RULES.get(name)
    if rule is None:
        raise ValueError(f"unknown scale rule {name!r}; choose one of {', '.join(_RULES)} "
                         "(or register_scale_rule your own)")
    return rule


def check_scale_rule(name: str) -> str:
    return get_scale_rule(name).name


def _gaussian_mse(step: float, n: int) -> float:
    """Exact mean squared error of the N-level uniform quantiser with ``step`` on N(0, 1)."""
    half = (n - 1) / 2

    def pdf(x: float) -> float:
        return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    total = 0.0
    for i in range(n):
        q = (i - half) * step
        a = -math.inf if i == 0 else q - step / 2
        b = math.inf if i == n - 1 else q + step / 2
        mass = cdf(b) - cdf(a)
        first = pdf(a) - pdf(b)  # integral of x * pdf over [a, b]
        second = mass + (0.0 if math.isinf(a) else a * pdf(a)) - (0.0 if math.isinf(b) else b * pdf(b))
        total += second - 2 * q * first + q * q * mass
    return total


@cache
def gaussian_step(n: int) -> float:
    """MSE-optimal uniform step for N levels on a unit Gaussian (exact error, golden search)."""
    if n < 2:
        raise ValueError(f"need at least 2 levels, got {n}")
    # Coarse scan, then golden-section refinement: the error is unimodal in the step near its minimum.
    steps = [0.01 + i * (4.0 / math.sqrt(n)) / 400 for i in range(400)]
    best = min(steps, key=lambda st: _gaussian_mse(st, n))
    lo, hi = best * 0.95, best * 1.05
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if _gaussian_mse(a, n) < _gaussian_mse(b, n):
            hi = b
        else:
            lo = a
    return (lo + hi) / 2


def _reduce_dims(w: torch.Tensor, per_channel: bool) -> tuple[int, ...] | None:
    if per_channel and w.dim() > 1:
        return tuple(range(1, w.dim()))
    return None


# From this many elements on, the std is sqrt(E[w^2] - E[w]^2) from two fast (cascade-summed)
# means rather than torch.std's Welford pass, which took ~10x longer on a 1M-element CPU tensor
# (2 ms vs 0.25 ms, single thread) and dominated fake-quant training steps. The two agree to ~1e-7
# relative for weight tensors (|mean| not orders of magnitude above the std). Below it, one
# torch.std call is cheaper than the few small ops.
_FAST_STD_MIN = 65536


def _std(w: torch.Tensor, dims: tuple[int, ...] | None,
         workspace: torch.Tensor | None) -> torch.Tensor:
    if w.numel() < _FAST_STD_MIN:
        if dims is None:
            return w.std(unbiased=False) if w.numel() > 1 else w.abs().reshape(())
        return w.std(dim=dims, keepdim=True, unbiased=False)
    sq = torch.mul(w, w, out=workspace) if workspace is not None else w * w
    if dims is None:
        mean, mean_sq = w.mean(), sq.mean()
    else:
        mean, mean_sq = w.mean(dim=dims, keepdim=True), sq.mean(dim=dims, keepdim=True)
    return mean_sq.addcmul_(mean, mean, value=-1).clamp_min_(0).sqrt_()


def _stat(w: torch.Tensor, per_channel: bool, fn: str,
          workspace: torch.Tensor | None = None) -> torch.Tensor:
    dims = _reduce_dims(w, per_channel)
    if fn == "std":
        return _std(w, dims, workspace)
    a = torch.abs(w, out=workspace) if workspace is not None else w.abs()
    if fn == "absmean":
        return a.mean() if dims is None else a.mean(dim=dims, keepdim=True)
    return a.amax() if dims is None else a.amax(dim=dims, keepdim=True)


def _gauss(w: torch.Tensor, n: int, per_channel: bool, *,
           workspace: torch.Tensor | None = None) -> torch.Tensor:
    # _stat returns a fresh tensor, so the scaling and the floor are applied in place
    return _stat(w, per_channel, "std", workspace).mul_(gaussian_step(n)).clamp_min_(_MIN_SCALE)


def _absmean(w: torch.Tensor, n: int, per_channel: bool, *,
             workspace: torch.Tensor | None = None) -> torch.Tensor:
    return _stat(w, per_channel, "absmean", workspace).mul_(2.0 / (n - 1)).clamp_min_(_MIN_SCALE)


def _absmax(w: torch.Tensor, n: int, per_channel: bool, *,
            workspace: torch.Tensor | None = None) -> torch.Tensor:
    return _stat(w, per_channel, "absmax", workspace).mul_(2.0 / (n - 1)).clamp_min_(_MIN_SCALE)


def _seq(w: torch.Tensor, n: int, per_channel: bool, *,
         workspace: torch.Tensor | None = None) -> torch.Tensor:
    # alpha = max|w| is the outer edge of the outermost bin, not its level: N bins, not N - 1 steps
    return _stat(w, per_channel, "absmax", workspace).mul_(2.0 / n).clamp_min_(_MIN_SCALE)


for _rule in (
    ScaleRule("gauss", _gauss, workspace=True),
    ScaleRule("absmean", _absmean, workspace=True),
    ScaleRule("absmax", _absmax, workspace=True),
    ScaleRule("lsq", _gauss, learned=True, quantizer=fake_quantize_learned, workspace=True),
    ScaleRule("seq", _seq, learned=True, quantizer=fake_quantize_stretched,
              grid_step=stretched_step, workspace=True),
):
    register_scale_rule(_rule)
del _rule


def compute_scale(w: torch.Tensor, n: int, rule: str | ScaleRule, per_channel: bool = False, *,
                  workspace: torch.Tensor | None = None) -> torch.Tensor:
    """The grid step ``s`` for ``w`` (scalar, or shape (C, 1, ...) per output channel).

    Learned rules (``lsq``, ``seq``) return their initial value; the layer then owns it as a
    parameter. ``workspace``: a scratch tensor shaped like ``w`` to use instead of allocating one
    (its contents are overwritten; the layers pass the buffer that then receives the quantised
    weight).
    """
    return get_scale_rule(rule).initial_step(w, n, per_channel, workspace=workspace)
