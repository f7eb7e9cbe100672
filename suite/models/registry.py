"""Model names -> architectures, and a JSON spec that rebuilds a model exactly.

Every family resolves (preset, input shape, classes, width, depth, norm, resolution) into a frozen
config dataclass first, then builds the module from it; the spec stores the inputs (to rebuild)
and the resolved config under ``arch`` (to log, and to notice when the code has drifted from a
saved model).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from suite.models import cnn, fc, lm, vit
from suite.models.common import check_width
from suite.quant import QuantConfig

SPEC_VERSION = 1


@dataclass(frozen=True)
class _Family:
    task: str  # "image" | "text"
    make_config: Callable[..., Any]
    model: type[nn.Module]
    norms: tuple[str, ...]


_FAMILIES = {
    "fc": (fc, fc.FC, "image"),
    "cnn": (cnn, cnn.CNN, "image"),
    "vit": (vit, vit.ViT, "image"),
    "lm": (lm, lm.LM, "text"),
}
_REGISTRY: dict[str, _Family] = {
    name: _Family(task, module.make_config, model, module.NORMS)
    for module, model, task in _FAMILIES.values()
    for name in module.PRESETS
}
MODELS: tuple[str, ...] = tuple(sorted(_REGISTRY))


def _family(name: str) -> _Family:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return _REGISTRY[name]


def model_task(name: str) -> str:
    """``image`` (input (B, C, H, W) -> logits (B, classes)) or ``text`` ((B, T) -> (B, T, vocab))."""
    return _family(name).task


def model_norms(name: str) -> tuple[str, ...]:
    """The ``norm`` values model ``name`` accepts: "auto" (picked per resolution) and its own."""
    return ("auto", *_family(name).norms)


def _config(name: str, qconfig: QuantConfig, input_shape: tuple[int, ...], num_classes: int,
            width: float, depth: int | None, norm: str) -> Any:
    family = _family(name)
    if not isinstance(qconfig, QuantConfig):
        raise TypeError(f"qconfig must be a QuantConfig, got {type(qconfig).__name__}")
    return family.make_config(name, input_shape=tuple(input_shape), num_classes=num_classes,
                              width=check_width(width), depth=depth, norm=norm, qconfig=qconfig)


def build_model(name: str, *, qconfig: QuantConfig, input_shape: tuple[int, ...],
                num_classes: int, width: float = 1.0, depth: int | None = None,
                norm: str = "auto") -> nn.Module:
    """Build model ``name`` with every weight-bearing layer at ``qconfig``'s resolution.

    ``input_shape`` is (C, H, W) for image models and (max_len,) for the LM, whose
    ``num_classes`` is the vocabulary size. ``width`` scales channels / hidden sizes, ``depth``
    sets the number of hidden layers, conv blocks or transformer blocks (None: the preset's).
    """
    cfg = _config(name, qconfig, input_shape, num_classes, width, depth, norm)
    return _family(name).model(cfg, qconfig)


def qconfig_to_dict(qconfig: QuantConfig) -> dict[str, Any]:
    out = {f.name: getattr(qconfig, f.name) for f in fields(qconfig)}
    out["resolution"] = qconfig.resolution.label  # parse_resolution reads every label back
    return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def model_spec(name: str, *, qconfig: QuantConfig, input_shape: tuple[int, ...],
               num_classes: int, width: float = 1.0, depth: int | None = None,
               norm: str = "auto") -> dict[str, Any]:
    """A JSON-able description from which ``model_from_spec`` rebuilds the same architecture."""
    cfg = _config(name, qconfig, input_shape, num_classes, width, depth, norm)
    return _jsonable({
        "spec_version": SPEC_VERSION,
        "name": name,
        "task": _family(name).task,
        "qconfig": qconfig_to_dict(qconfig),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "width": width,
        "depth": depth,
        "norm": norm,
        "arch": asdict(cfg),
    })


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild the model a ``model_spec`` describes (weights not included)."""
    version = spec.get("spec_version")
    if version != SPEC_VERSION:
        raise ValueError(f"unsupported model spec_version {version!r}; expected {SPEC_VERSION}")
    missing = [k for k in ("name", "qconfig", "input_shape", "num_classes") if k not in spec]
    if missing:
        raise ValueError(f"model spec lacks {', '.join(missing)}")
    qconfig = QuantConfig(**spec["qconfig"])
    kwargs = {"qconfig": qconfig, "input_shape": tuple(spec["input_shape"]),
              "num_classes": spec["num_classes"], "width": spec.get("width", 1.0),
              "depth": spec.get("depth"), "norm": spec.get("norm", "auto")}
    cfg = _config(spec["name"], **kwargs)
    if "arch" in spec and _jsonable(asdict(cfg)) != spec["arch"]:
        raise ValueError(f"model spec for {spec['name']!r} no longer matches the code: saved "
                         f"arch {spec['arch']} vs rebuilt {_jsonable(asdict(cfg))}")
    return _family(spec["name"]).model(cfg, qconfig)
