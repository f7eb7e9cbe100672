"""Small helpers every model family shares: the width/depth knobs and the norm option."""

from __future__ import annotations

import math

from suite.quant import QuantConfig


def check_width(width: float) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) \
            or width <= 0:
        raise ValueError(f"width must be a finite number > 0, got width={width!r}")
    return float(width)


def check_depth(depth: int | None) -> int | None:
    if depth is None:
        return None
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be None or an integer >= 1, got depth={depth!r}")
    return depth


def scaled(base: int, width: float, multiple: int = 1) -> int:
    """``base * width`` rounded to a multiple of ``multiple`` (at least one multiple), so attention
    heads keep dividing the model dimension at every width."""
    return max(multiple, multiple * round(base * width / multiple))


def resolve_norm(norm: str, family: str, choices: tuple[str, ...], bnn_auto: str,
                 other_auto: str, qconfig: QuantConfig) -> str:
    """Turn ``auto`` into the family's concrete choice for this resolution; reject anything else
    the family does not know."""
    allowed = ("auto", *choices)
    if norm not in allowed:
        raise ValueError(f"unknown norm {norm!r} for {family}; choose one of {', '.join(allowed)}")
    if norm == "auto":
        return bnn_auto if qconfig.is_bnn else other_auto
    return norm


def image_shape(input_shape: tuple[int, ...], family: str) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"{family} needs input_shape (C, H, W) of positive ints, got {input_shape!r}")
    return shape  # type: ignore[return-value]


def check_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return num_classes
