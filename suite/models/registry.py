"""Model names -> architectures, and a JSON spec that rebuilds a model exactly.

Every family resolves (preset, input shape, classes, width, depth, norm, resolution) into a frozen
config dataclass first, then builds the module from it; the spec stores the inputs (to rebuild)
and the resolved config under ``arch`` (to log, and to notice when the code has drifted from a
saved model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from suite.models import cnn, fc, lm, vit
from suite.models.common import check_width
from suite.models.names import MODELS, model_task
from suite.models.user import USER_KIND, build_user_model
from suite.quant import QuantConfig

SPEC_VERSION = 1


@dataclass(frozen=True)
class _Family:
    task: str  # "image" | "text"
    make_config: Callable[..., Any]
    model: type[nn.Module]
    norms: tuple[str, ...]


_FAMILIES = {
    "fc": (fc, fc.FC, fc.TASK),
    "cnn": (cnn, cnn.CNN, cnn.TASK),
    "vit": (vit, vit.ViT, vit.TASK),
    "lm": (lm, lm.LM, lm.TASK),
}
_REGISTRY: dict[str, _Family] = {
    name: _Family(task, module.make_config, model, module.NORMS)
    for module, model, task in _FAMILIES.values()
    for name in module.PRESETS
}
if tuple(sorted(_REGISTRY)) != MODELS:  # the names, tasks and presets live in names.py
    raise RuntimeError(f"suite/models/names.py MODELS {MODELS} != the families' {sorted(_REGISTRY)}")


def _family(name: str) -> _Family:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return _REGISTRY[name]


def _config(name: str, qconfig: QuantConfig, input_shape: tuple[int, ...], num_classes: int,
            width: float, depth: int | None, norm: str) -> Any:
    family = _family(name)
    if not isinstance(qconfig, QuantConfig):
        raise TypeError(f"qconfig must be a QuantConfig, got {type(qconfig).__name__}")
    try:
        return family.make_config(name, input_shape=tuple(input_shape), num_classes=num_classes,
                                  width=check_width(width), depth=depth, norm=norm, qconfig=qconfig)
    except OverflowError as err:  # e.g. a cnn so deep that its doubling channel counts overflow
        knob = _knob({"name": name, "width": width, "depth": depth})
        raise ModelTooLarge(f"{knob}: model {name!r} is too large to describe ({err})") from None


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
               norm: str = "auto", layers: Any = (), keep_fp32: str = "none") -> dict[str, Any]:
    """A JSON-able description from which ``model_from_spec`` rebuilds the same architecture.

    ``layers`` and ``keep_fp32`` (``suite.quant.quantize_``'s per-layer rules) are recorded only
    when they change something, so a spec without them reads as it always did."""
    cfg = _config(name, qconfig, input_shape, num_classes, width, depth, norm)
    return _jsonable({
        "spec_version": SPEC_VERSION,
        "name": name,
        "task": model_task(name),
        "qconfig": qconfig_to_dict(qconfig),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "width": width,
        "depth": depth,
        "norm": norm,
        "arch": asdict(cfg),
        **_layer_policy(layers, keep_fp32),
    })


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild the model a ``model_spec`` describes (weights not included)."""
    version = spec.get("spec_version")
    if version != SPEC_VERSION:
        raise ValueError(f"unsupported model spec_version {version!r}; expected {SPEC_VERSION}")
    if spec.get("kind") == USER_KIND:
        return build_user_model(spec)
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
    model = _family(spec["name"]).model(cfg, qconfig)
    policy = _layer_policy(spec.get("layers"), spec.get("keep_fp32") or "none")
    if policy:
        # the family builds every layer at qconfig's resolution; the rules then reconfigure
        # the layers they name (an fp32 layer stays a quant layer with quantisation off)
        from suite.quant.quantize import quantize_

        quantize_(model, qconfig.resolution, scale_rule=qconfig.scale_rule,
                  per_channel=qconfig.per_channel, quantize_bias=qconfig.quantize_bias,
                  conv_norm=qconfig.conv_norm, **policy)
    return model


def _layer_policy(layers: Any, keep_fp32: str) -> dict[str, Any]:
    """The spec's per-layer keys: only those that differ from "every layer alike"."""
    from suite.quant.policy import check_keep_fp32, rule_strings

    out: dict[str, Any] = {}
    if rules := rule_strings(layers):
        out["layers"] = list(rules)
    if check_keep_fp32(keep_fp32) != "none":
        out["keep_fp32"] = keep_fp32
    return out


# Training holds, for each parameter, its fp32 weight, gradient and Adam's two moments: a lower
# bound on a run's memory, which activations and the quantised copies of the weights come on top of.
TRAIN_BYTES_PER_PARAM = 16


class ModelTooLarge(ValueError):
    """Training the model of a spec cannot fit in memory. The message starts with the knob that
    made it so (``width=...``, ``depth=...`` or ``model=...``), as a RunConfig error does."""


def _meta_size(spec: dict[str, Any]) -> tuple[int, int]:
    # Shapes only, no memory behind any tensor. (The first meta build of a process imports
    # torch._dynamo and sympy, seconds, but a run imports both anyway when it starts training.)
    with torch.device("meta"):
        model = model_from_spec(spec)
    params = sum(p.numel() for p in model.parameters())
    return params, sum(b.numel() * b.element_size() for b in model.buffers())


def model_size(spec: dict[str, Any]) -> tuple[int, int]:
    """(parameters, bytes of buffers) of the model ``spec`` describes, counted without allocating
    it. A deep spec is counted at depths 1, 2 and 3 first: when each block adds the same (fc,
    vit, lm), the count is linear in depth, and building a million blocks would take minutes even
    on the meta device; blocks that widen (cnn) are all counted (a deep cnn overflows early)."""
    depth = spec.get("depth")
    if depth is None or depth <= 3:
        return _meta_size(spec)
    shallow = {k: v for k, v in spec.items() if k != "arch"}  # arch is the full depth's
    sizes = [_meta_size({**shallow, "depth": d}) for d in (1, 2, 3)]
    steps = {(b[0] - a[0], b[1] - a[1]) for a, b in zip(sizes, sizes[1:])}
    if len(steps) > 1:
        return _meta_size(spec)
    (param_step, buffer_step), = steps
    return sizes[0][0] + (depth - 1) * param_step, sizes[0][1] + (depth - 1) * buffer_step


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes the training device can still take (None: unknown): free GPU memory for CUDA, else
    the host's MemAvailable (free plus reclaimable cache), capped by a cgroup v2 limit."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] if torch.cuda.is_available() else None
    available = None
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        available = next((int(line.split()[1]) * 1024 for line in meminfo
                          if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError):
        pass
    if available is None and "SC_AVPHYS_PAGES" in getattr(os, "sysconf_names", {}):
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int((cgroup / "memory.current").read_text())
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def _knob(spec: dict[str, Any]) -> str:
    """The knob that makes a preset too large: the width or depth when set, else the preset."""
    if spec.get("width", 1.0) != 1.0:
        return f"width={spec['width']!r}"
    if spec.get("model_args"):
        return f"model_args={spec['model_args']!r}"
    if spec.get("depth") is not None:
        return f"depth={spec['depth']!r}"
    return f"model={spec['name']!r}"


def check_fits(spec: dict[str, Any], available: int | None, model: nn.Module | None = None) -> None:
    """Raise ModelTooLarge when training the model of ``spec`` needs more than ``available`` bytes
    (None: unknown, so not checked): before anything is allocated, or, given the ``model``
    already built (a user model: its factory is the user's code, which need not build on the
    meta device), before it moves to the training device."""
    if available is None or (model is None and spec.get("kind") == USER_KIND):
        return
    where = f"{available:,} bytes ({available / 2**30:.1f} GiB) are available"
    try:
        if model is not None:
            params = sum(p.numel() for p in model.parameters())
            buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
        else:
            params, buffer_bytes = model_size(spec)
    except Exception as err:  # noqa: BLE001 - an estimate must never stop a run that would train
        if not (isinstance(err, RuntimeError) and "overflow" in str(err)):
            return  # the estimate failed, not the model: let the real build decide
        # torch refuses a tensor of 2**63 bytes or more even on the meta device
        raise ModelTooLarge(f"{_knob(spec)}: model {spec['name']!r} would have more than "
                            f"{2**61:.2e} parameters ({err}); training it needs more than "
                            f"{2**61 * TRAIN_BYTES_PER_PARAM:.2e} bytes but {where}") from None
    need = params * TRAIN_BYTES_PER_PARAM + buffer_bytes
    if need > available:
        raise ModelTooLarge(f"{_knob(spec)}: model {spec['name']!r} would have {params:,} parameters "
                            f"({params:.2e}); training it needs at least {need:,} bytes ({need:.2e}: "
                            f"{TRAIN_BYTES_PER_PARAM} per parameter for fp32 weights, gradients and "
                            f"Adam's two moments) but {where}")
