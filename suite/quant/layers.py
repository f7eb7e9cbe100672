"""Quantised Linear, Conv1d, Conv2d and Embedding layers.

One class per op serves every resolution, so fp32 baselines run through the very same code with
quantisation off. At ``bnn`` resolution the layer is the binary normalized layer of arXiv
2509.07025: {0, 1} weight and bias (each thresholded at its own mean) and a parameter-free
normalisation of each example's output before the activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from suite.quant.fake import (
    binary_indices,
    example_normalize,
    fake_binarize,
    fake_quantize,
    level_indices,
)
from suite.quant.names import CONV_NORMS
from suite.quant.resolution import FP32, Resolution, parse_resolution
from suite.quant.scale import DEFAULT_SCALE_RULE, ScaleRule, check_scale_rule, compute_scale, get_scale_rule

# Axes a bnn conv layer normalises over. The paper says "the features of each example"; for a
# (N, C, H, W) output that can mean:
#   chw - all of C, H, W per example (default; the faithful ports of the paper do this),
#   c   - channels at each pixel (Keras LayerNormalization's default axis=-1),
#   hw  - each channel over space (instance-norm style; this cancels a per-channel bias exactly,
#         so binary conv biases do nothing).
# (the names, without torch: suite/quant/names.py CONV_NORMS)
CONV_NORM_AXES = dict(zip(CONV_NORMS, ((1, 2, 3), (1,), (2, 3)), strict=True))
# The same choices for a (N, C, L) Conv1d output: "hw" is then the one spatial axis.
_CONV1D_NORM_AXES = {"chw": (1, 2), "c": (1,), "hw": (2,)}


@dataclass(frozen=True)
class QuantConfig:
    """How every weight-bearing layer of a model is stored and trained."""

    resolution: Resolution = FP32
    scale_rule: str = DEFAULT_SCALE_RULE
    per_channel: bool = False
    quantize_bias: bool | None = None  # None: bnn quantises biases (paper 1), levels keep fp32 (paper 2)
    conv_norm: str = "chw"

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolution", parse_resolution(self.resolution))
        check_scale_rule(self.scale_rule)
        if self.conv_norm not in CONV_NORM_AXES:
            raise ValueError(
                f"unknown conv_norm {self.conv_norm!r}; choose one of {', '.join(CONV_NORM_AXES)}"
            )

    @property
    def bias_quantized(self) -> bool:
        if not self.resolution.quantized:
            return False
        if self.quantize_bias is None:
            return self.resolution.kind == "bnn"
        return self.quantize_bias

    @property
    def is_bnn(self) -> bool:
        return self.resolution.kind == "bnn"


class QTensor(NamedTuple):
    """A quantised tensor as stored: integer level indices, the grid step(s) and N.

    Value = ``(indices - (n-1)/2) * scale`` for level grids; ``indices`` (0/1) itself for bnn,
    whose ``scale`` is None.
    """

    indices: torch.Tensor
    scale: torch.Tensor | None
    n: int
    shape: tuple[int, ...]

    def values(self) -> torch.Tensor:
        idx = self.indices.to(torch.float32).reshape(self.shape)
        if self.scale is None:
            return idx
        return (idx - (self.n - 1) / 2) * self.scale


class PrecisionCount(NamedTuple):
    name: str
    numel: int
    bits: float


class QuantMixin:
    """Shared by the quantised layers: weight/bias in their forward form, and accounting."""

    qconfig: QuantConfig
    weight: nn.Parameter
    bias: nn.Parameter | None
    # The weight's output-channel axis, which a per-channel step keeps: 0 for torch's layers;
    # 1 for a (in, out) weight such as Hugging Face's Conv1D. The quantiser sees the weight with
    # this axis moved to the front (a view), so every scale rule works on (out, ...) tensors.
    out_axis: int = 0

    def _init_quant(self, qconfig: QuantConfig) -> None:
        self.qconfig = qconfig
        # A frozen layer holds weights already on the grid (rebuilt from a packed file) and uses
        # them as they are: requantising would recompute the scale from the grid values.
        self.frozen = False
        res = qconfig.resolution
        if res.kind == "levels" and self.scale_rule.learned:
            s = self.scale_rule.initial_step(self._channels_first(self.weight), res.n,
                                             qconfig.per_channel)
            self.step = nn.Parameter(s.clone())
        else:
            self.register_parameter("step", None)

    @property
    def scale_rule(self) -> ScaleRule:
        # looked up by name (a dict lookup per forward) so the layer pickles without the rule's
        # functions, which may be a user's lambdas
        return get_scale_rule(self.qconfig.scale_rule)

    def set_qconfig(self, qconfig: QuantConfig) -> None:
        """Quantise this layer as ``qconfig`` says from now on (its weights kept; a learned step
        is initialised afresh from them)."""
        if "step" in self._parameters:
            del self._parameters["step"]
        self._init_quant(qconfig)

    def _channels_first(self, t: torch.Tensor) -> torch.Tensor:
        # a per-tensor step is a scalar: nothing to transpose
        return t if self.out_axis == 0 or t.dim() <= self.out_axis else t.transpose(0, self.out_axis)

    def _scale(self, w: torch.Tensor, workspace: torch.Tensor | None = None) -> torch.Tensor:
        """The grid step of ``w`` given channels first (``_channels_first``)."""
        if self.step is not None:
            return self.scale_rule.forward_step(self.step, self.qconfig.resolution.n)
        return self.scale_rule.initial_step(w, self.qconfig.resolution.n, self.qconfig.per_channel,
                                            workspace=workspace)

    def quantized_weight(self) -> torch.Tensor:
        res = self.qconfig.resolution
        w = self.weight
        if res.kind == "fp32" or self.frozen:
            return w
        if res.kind == "bnn":
            return fake_binarize(w)
        w = self._channels_first(w)
        if self.step is not None:
            q = self.scale_rule.quantize(w, res.n, self.step)
        else:
            # One fresh buffer per forward serves as the scale's scratch space and then receives
            # the quantised weight: one weight-sized allocation instead of three.
            buf = torch.empty_like(w, memory_format=torch.contiguous_format)
            q = self.scale_rule.quantize(w, res.n, self._scale(w, buf), out=buf)
        return self._channels_first(q)

    def quantized_bias(self) -> torch.Tensor | None:
        b = self.bias
        if b is None or not self.qconfig.bias_quantized or self.frozen:
            return b
        res = self.qconfig.resolution
        if res.kind == "bnn":
            return fake_binarize(b)
        return fake_quantize(b, res.n, compute_scale(b, res.n, "gauss"))

    @torch.no_grad()
    def quantized_tensors(self) -> dict[str, QTensor]:
        """Level indices of every quantised parameter (for flip rates and packing)."""
        res = self.qconfig.resolution
        out: dict[str, QTensor] = {}
        if not res.quantized:
            return out
        tensors = {"weight": self.weight}
        if self.bias is not None and self.qconfig.bias_quantized:
            tensors["bias"] = self.bias
        for name, p in tensors.items():
            if res.kind == "bnn":
                out[name] = QTensor(binary_indices(p).to(torch.uint8), None, 2, tuple(p.shape))
                continue
            if name == "weight":
                s = self._channels_first(self._scale(self._channels_first(p)).detach())
            else:
                s = compute_scale(p, res.n, "gauss")
            idx = level_indices(p, res.n, s).to(torch.uint8 if res.n <= 256 else torch.int32)
            out[name] = QTensor(idx, s.to(torch.float32).clone(), res.n, tuple(p.shape))
        return out

    def precision_counts(self) -> list[PrecisionCount]:
        """Parameters of this layer by stored precision; grid steps count as fp32 numbers."""
        res = self.qconfig.resolution
        counts = [PrecisionCount("weight", self.weight.numel(), res.bits)]
        if self.bias is not None:
            bits = res.bits if self.qconfig.bias_quantized else 32.0
            counts.append(PrecisionCount("bias", self.bias.numel(), bits))
        if res.kind == "levels":
            n_scales = self.weight.shape[self.out_axis] if self.qconfig.per_channel else 1
            if self.bias is not None and self.qconfig.bias_quantized:
                n_scales += 1
            counts.append(PrecisionCount("scale", n_scales, 32.0))
        return counts

    def _normalize(self, y: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return example_normalize(y, dims) if self.qconfig.is_bnn else y


class QuantLinear(QuantMixin, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 qconfig: QuantConfig | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        qconfig = qconfig or QuantConfig()
        if qconfig.is_bnn:
            # Paper 1: Glorot-uniform kernels, zero biases.
            nn.init.xavier_uniform_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)
        self._init_quant(qconfig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.quantized_weight(), self.quantized_bias())
        return self._normalize(y, (-1,))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, resolution={self.qconfig.resolution}"


class _QuantConv(QuantMixin):
    """QuantConv1d and QuantConv2d: the torch conv of their dimensionality, its weight (and bias)
    on the grid, and bnn's normalisation over that dimensionality's axes (``NORM_AXES``)."""

    NORM_AXES: dict[str, tuple[int, ...]]

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | str = 0, bias: bool = True,
                 qconfig: QuantConfig | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=bias)
        qconfig = qconfig or QuantConfig()
        if qconfig.is_bnn:
            nn.init.xavier_uniform_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)
        self._init_quant(qconfig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(x, self.quantized_weight(), self.quantized_bias())
        return self._normalize(y, self.NORM_AXES[self.qconfig.conv_norm])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, resolution={self.qconfig.resolution}"


class QuantConv2d(_QuantConv, nn.Conv2d):
    NORM_AXES = CONV_NORM_AXES


class QuantConv1d(_QuantConv, nn.Conv1d):
    NORM_AXES = _CONV1D_NORM_AXES


class QuantEmbedding(QuantMixin, nn.Embedding):
    """Token table. At bnn resolution it equals paper 1's binary embedding, a binary normalized
    dense layer on one-hot tokens: a row lookup plus its own binary bias, then normalisation."""

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 qconfig: QuantConfig | None = None) -> None:
        super().__init__(num_embeddings, embedding_dim)
        qconfig = qconfig or QuantConfig()
        if qconfig.is_bnn:
            nn.init.xavier_uniform_(self.weight)
            self.bias = nn.Parameter(torch.zeros(embedding_dim))
        else:
            nn.init.normal_(self.weight, std=0.02)
            self.register_parameter("bias", None)
        self._init_quant(qconfig)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # the table's own options (all at their defaults in the built-in models)
        y = F.embedding(idx, self.quantized_weight(), self.padding_idx, self.max_norm,
                        self.norm_type, self.scale_grad_by_freq, self.sparse)
        b = self.quantized_bias()
        if b is not None:
            y = y + b
        return self._normalize(y, (-1,))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, resolution={self.qconfig.resolution}"


class ExampleNorm(nn.Module):
    """Parameter-free normalisation of each example's last-dim features (bnn's Normalize)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return example_normalize(x, (-1,))


def make_norm(qconfig: QuantConfig, dim: int) -> nn.Module:
    """Normalisation between layers: bnn has no trainable parameters anywhere, so it uses the
    parameter-free kind; other resolutions use LayerNorm, whose gain and bias stay fp32 and are
    counted as such."""
    return ExampleNorm() if qconfig.is_bnn else nn.LayerNorm(dim)
