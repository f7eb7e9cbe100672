"""Weight resolution: grids, straight-through quantisers, scale rules, layers and accounting.

Modules: resolution (what N levels, bnn and fp32 mean; labels; no torch), scale (where the grid
sits; the scale-rule registry), fake (straight-through quantisers), layers
(Quant{Linear,Conv1d,Conv2d,Embedding}), summary (memory accounting, per-layer table), policy
(per-layer rules and keep_fp32 policies; no torch), quantize (``quantize_`` for any model,
``register_layer``), hf (Hugging Face's Conv1D, imported only when a model has one).

Names load their modules on first use: ``suite.quant.resolution`` is plain Python, and the report
parses resolution labels with it without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("example_normalize", "fake_binarize", "fake_quantize"), "fake"),
    **dict.fromkeys(("CONV_NORM_AXES", "ExampleNorm", "QTensor", "QuantConfig", "QuantConv1d", "QuantConv2d",
                     "QuantEmbedding", "QuantLinear", "QuantMixin", "make_norm"), "layers"),
    **dict.fromkeys(("BNN", "FP32", "Resolution", "from_bit_budget", "levels", "parse_resolution"),
                    "resolution"),
    **dict.fromkeys(("DEFAULT_SCALE_RULE", "SCALE_RULES", "ScaleRule", "compute_scale", "gaussian_step",
                     "get_scale_rule", "register_scale_rule", "scale_rules"), "scale"),
    **dict.fromkeys(("LayerRow", "ParamSummary", "format_table", "layer_table", "param_summary"),
                    "summary"),
    **dict.fromkeys(("FullPrecision", "QuantizeSummary", "converter_for", "quantize_",
                     "register_layer", "swap_class"), "quantize"),
    **dict.fromkeys(("KEEP_FP32", "LayerRule", "parse_rules"), "policy"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'suite.quant' has no attribute {name!r}")
    return getattr(importlib.import_module(f"suite.quant.{_EXPORTS[name]}"), name)
