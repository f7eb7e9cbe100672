"""Fake quantisation with straight-through estimators.

The forward value is exactly the grid value (not ``w + (q - w).detach()``, whose float rounding can
land one ulp off the grid); the backward pass is the identity for the weights, as in both papers
(``W_q = W + stop_gradient(Quant(W) - W)``).
"""

from __future__ import annotations

import math

import torch

# ParetoQ's StretchedElasticQuant constants, in its units of the clip value alpha = N * s / 2: a
# weight with |w| / alpha above _SEQ_CLIP counts as clipped, and alpha never drops below
# _SEQ_ALPHA_MIN in the forward pass (a step trained down to 0 would divide by zero).
_SEQ_CLIP = 1 - 1e-2
_SEQ_ALPHA_MIN = 1e-5
_LOW_PRECISION = (torch.bfloat16, torch.float16)  # autocast's dtypes


def level_indices(w: torch.Tensor, n: int, scale: torch.Tensor, *,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Index 0..N-1 of the nearest grid level. Even N has no zero level, so a weight of exactly 0
    maps to -s/2 or +s/2 (index N/2 - 1 or N/2: round half to even picks the even one), never to
    0: binary never silently becomes ternary.

    Computed as ``clamp(round(w / s + (N-1)/2), 0, N-1)``, in place on one fresh tensor: a chain of
    out-of-place ops allocated a new weight-sized tensor per op, which cost several times the
    arithmetic on CPU (page faults on large fresh allocations). ``out``: a buffer shaped like
    ``w`` to compute into instead of a new tensor."""
    half = (n - 1) / 2
    s = scale.detach() if isinstance(scale, torch.Tensor) else scale
    t = torch.div(w.detach(), s, out=out) if out is not None else torch.div(w.detach(), s)
    return t.add_(half).round_().clamp_(0, n - 1)


def binary_indices(p: torch.Tensor) -> torch.Tensor:
    """Binary normalized rule (arXiv 2509.07025, Eq. 1): 1 where p > mean(p), else 0."""
    return (p > p.mean()).to(p.dtype)


class _StraightThrough(torch.autograd.Function):
    """Returns ``q`` in the forward pass; passes the gradient to ``w`` unchanged."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return grad, None


class _LearnedStep(torch.autograd.Function):
    """LSQ (Esser et al. 2020): straight-through inside the grid's range, zero outside; the step
    gets ``sum(grad * dq/ds) / sqrt(numel * Qp)``."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, s: torch.Tensor, n: int) -> torch.Tensor:  # noqa: ANN001
        half = (n - 1) / 2
        v = w / s
        idx = torch.clamp(torch.round(v + half), 0, n - 1)
        inside = (v + half >= -0.5) & (v + half <= n - 0.5)
        ctx.save_for_backward(v, idx, inside, s)
        ctx.n = n
        return (idx - half) * s

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        v, idx, inside, s = ctx.saved_tensors
        half = (ctx.n - 1) / 2
        grad_w = grad * inside
        dq_ds = (idx - half) - v * inside
        g = grad * dq_ds
        gscale = 1.0 / (max(v.numel() / max(s.numel(), 1), 1) * max(half, 0.5)) ** 0.5
        return grad_w, _sum_to(g, s) * gscale, None


def _sum_to(g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``g`` summed down to the shape of the step ``s`` (scalar, or one per output channel)."""
    if s.dim() == 0 or s.numel() == 1:
        return g.sum().reshape(s.shape)
    dims = tuple(d for d in range(g.dim()) if s.shape[d] == 1)
    return g.sum(dim=dims, keepdim=True)


def stretched_step(step: torch.Tensor, n: int) -> torch.Tensor:
    """The step ``seq`` quantises with: ``step`` floored where ParetoQ floors alpha. The layers
    read the stored grid step from here too, so a packed file holds the step the forward used."""
    return torch.clamp_min(step, 2 * _SEQ_ALPHA_MIN / n)


class _StretchedStep(torch.autograd.Function):
    """ParetoQ's stretched elastic quantiser with the step ``s = 2 alpha / N`` as the parameter.

    Forward: the suite's grid with step ``s``, which puts ParetoQ's levels (the centres of N equal
    bins on [-alpha, alpha]) in the same places. Backward: ParetoQ's, in units of ``s``:
    straight-through for ``|w| <= 0.99 alpha`` and zero beyond; the step gets
    ``sum(grad * t) / sqrt(numel * max(1, (N-1)//2))`` with ``t = (i - (N-1)/2) - w/s`` inside and
    ``+-N/2 * Qp`` beyond, ``Qp = (N/2 - shift) / (N/2)`` (shift 1/2 for even N, 0 for odd N), which is
    ParetoQ's ``dq/dalpha`` times ``dalpha/ds = N/2``. For even N, ``N/2 * Qp`` is the outermost
    level (the true derivative, as in LSQ); for odd N ParetoQ's Qp is 1, so a clipped weight pulls
    the step by N/2, half a step more than the outermost level: kept, to match ParetoQ."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, step: torch.Tensor, n: int) -> torch.Tensor:  # noqa: ANN001
        s = stretched_step(step, n)
        half = (n - 1) / 2
        v = w / s
        idx = torch.clamp(torch.round(v + half), 0, n - 1)
        ctx.save_for_backward(v, idx, s)
        ctx.n = n
        return (idx - half) * s

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        v, idx, s = ctx.saved_tensors
        n = ctx.n
        half = (n - 1) / 2
        edge = _SEQ_CLIP * n / 2
        top = half if n % 2 == 0 else n / 2
        below, above = v < -edge, v > edge
        inside = ~(below | above)  # NaN counts as inside, as in ParetoQ (1 - small - big)
        dq_ds = torch.where(inside, (idx - half) - v, (above.to(v.dtype) - below.to(v.dtype)) * top)
        # ParetoQ scales by the whole tensor's size even with one alpha per row
        gscale = 1.0 / math.sqrt(v.numel() * max(1, (n - 1) // 2))
        return grad * inside, _sum_to(grad * dq_ds, s) * gscale, None


def fake_quantize(w: torch.Tensor, n: int, scale: torch.Tensor, *,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Grid value of ``w`` with identity gradient; ``scale`` is a constant here.

    The same ops in the same order as ``grid_values(level_indices(w, n, scale), n, scale)`` (so
    the same float results), done in place on one buffer (``out`` when given: a fresh tensor the
    caller hands over, never one reused across forwards, since the result is saved for backward)."""
    with torch.no_grad():
        q = level_indices(w, n, scale, out=out).sub_((n - 1) / 2).mul_(scale)
    return _StraightThrough.apply(w, q)


def fake_quantize_learned(w: torch.Tensor, n: int, step: torch.Tensor) -> torch.Tensor:
    return _LearnedStep.apply(w, step, n)


def fake_quantize_stretched(w: torch.Tensor, n: int, step: torch.Tensor) -> torch.Tensor:
    """``seq``: grid value of ``w`` on step ``stretched_step(step, n)``, ParetoQ's SEQ gradients."""
    return _StretchedStep.apply(w, step, n)


def fake_binarize(p: torch.Tensor) -> torch.Tensor:
    """{0, 1} at the tensor's own mean, identity gradient."""
    with torch.no_grad():
        q = binary_indices(p)
    return _StraightThrough.apply(p, q)


def example_normalize(z: torch.Tensor, dims: tuple[int, ...], eps: float = 1e-5) -> torch.Tensor:
    """Parameter-free normalisation to zero mean, unit std over ``dims`` of each example.

    Two-pass (mean, then the mean square of the centred values, which the output needs anyway):
    as accurate as torch.var_mean and, forward plus backward, ~2x faster on CPU than its
    Welford kernel. Under autocast a bf16/fp16 ``z`` is normalised in fp32 and stays fp32, as
    CUDA's autocast runs layer_norm: normalised in bf16, a unit-variance output is off by up to
    3e-2 (median 0.2-0.6% relative, 512 to 4,096 features; docs/amp.md)."""
    if z.dtype in _LOW_PRECISION and torch.is_autocast_enabled(z.device.type):
        z = z.float()
    centred = z - z.mean(dim=dims, keepdim=True)
    var = (centred * centred).mean(dim=dims, keepdim=True)
    return centred * torch.rsqrt(var + eps)
