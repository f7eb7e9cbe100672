"""Weight resolution: grids, straight-through quantisers, scale rules, layers and accounting."""

from suite.quant.fake import example_normalize, fake_binarize, fake_quantize
from suite.quant.layers import (
    CONV_NORM_AXES,
    ExampleNorm,
    QTensor,
    QuantConfig,
    QuantConv2d,
    QuantEmbedding,
    QuantLinear,
    QuantMixin,
    make_norm,
)
from suite.quant.resolution import BNN, FP32, Resolution, from_bit_budget, levels, parse_resolution
from suite.quant.scale import DEFAULT_SCALE_RULE, SCALE_RULES, compute_scale, gaussian_step
from suite.quant.summary import ParamSummary, param_summary

__all__ = [
    "BNN", "CONV_NORM_AXES", "DEFAULT_SCALE_RULE", "FP32", "SCALE_RULES", "ExampleNorm",
    "ParamSummary", "QTensor", "QuantConfig", "QuantConv2d", "QuantEmbedding", "QuantLinear",
    "QuantMixin", "Resolution", "compute_scale", "example_normalize", "fake_binarize",
    "fake_quantize", "from_bit_budget", "gaussian_step", "levels", "make_norm", "param_summary",
    "parse_resolution",
]
