"""The user's own models: a factory named by an import string or a registered name (names.py),
called with the data's shapes, then put on bitsweep's grids by ``quantize_``.

The factory is called with keyword arguments ``input_shape`` ((C, H, W) for images, (T,) for
text), ``num_classes`` (the vocabulary size for text), ``width`` and the entries of
``model_args``, and may ignore any of them (``**kwargs``). It returns an ``nn.Module`` whose
forward takes a batch (images (B, C, H, W) float32, or tokens (B, T) int64) and returns logits
((B, classes), or (B, T, vocab)) as a tensor or as an object with ``.logits`` (Hugging Face).

The model spec (a run directory's model.json, the packed file's header) records the import
string, the arguments and the quantisation, so ``model_from_spec`` rebuilds the model without
the sweep file or the registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from suite.models.names import factory_string, registered_models
from suite.plugins import ImportFailed, import_object, is_import_string

USER_KIND = "user"  # a model spec's "kind" for a user model (the families' specs have none)


class UserModelError(ValueError):
    """The user's model cannot be built or run as a run needs it; the message says why, with
    the underlying error."""


def user_spec(name: str, *, qconfig: dict[str, Any], input_shape: tuple[int, ...],
              num_classes: int, width: float, model_args: dict[str, Any], task: str,
              layers: Any = None, keep_fp32: str = "none") -> dict[str, Any]:
    """The JSON-able spec of user model ``name`` (``qconfig``: registry.qconfig_to_dict's)."""
    from suite.models.registry import SPEC_VERSION

    return {"spec_version": SPEC_VERSION, "kind": USER_KIND, "name": name,
            "factory": factory_string(name), "task": task, "qconfig": dict(qconfig),
            "input_shape": [int(d) for d in input_shape], "num_classes": int(num_classes),
            "width": width, "model_args": dict(model_args), "layers": layers,
            "keep_fp32": keep_fp32}


def _factory(spec: dict[str, Any]) -> Callable[..., Any]:
    name = spec["name"]
    registered = registered_models().get(name)
    if registered is not None:
        return registered.factory
    target = spec.get("factory") or (name if is_import_string(name) else None)
    if target is None:
        raise UserModelError(f"model {name!r} is not registered in this process and its spec "
                             "records no importable factory: register it in a module listed in "
                             "$BITSWEEP_PLUGINS, or name the factory by its import string")
    try:
        factory = import_object(target)
    except ImportFailed as err:
        raise UserModelError(str(err)) from None
    if not callable(factory):
        raise UserModelError(f"{target!r} is a {type(factory).__name__}, not a callable factory")
    return factory


def build_user_model(spec: dict[str, Any]) -> nn.Module:
    """The model of a user spec, quantised as the spec says (weights freshly initialised)."""
    from suite.quant.quantize import quantize_

    factory = _factory(spec)
    kwargs = {"input_shape": tuple(spec["input_shape"]), "num_classes": spec["num_classes"],
              "width": spec.get("width", 1.0), **spec.get("model_args", {})}
    try:
        model = factory(**kwargs)
    except Exception as err:  # noqa: BLE001 - whatever the user's code raises is reported
        raise UserModelError(f"the factory raised {type(err).__name__}: {err} (called with "
                             f"{_shown(kwargs)})") from err
    if not isinstance(model, nn.Module):
        raise UserModelError(f"the factory returned a {type(model).__name__}, not a torch "
                             "nn.Module")
    q = spec["qconfig"]
    try:
        quantize_(model, q["resolution"], scale_rule=q.get("scale_rule", "gauss"),
                  per_channel=q.get("per_channel", False), quantize_bias=q.get("quantize_bias"),
                  conv_norm=q.get("conv_norm", "chw"), layers=spec.get("layers"),
                  keep_fp32=spec.get("keep_fp32") or "none")
    except (ValueError, TypeError) as err:
        raise UserModelError(f"quantize_ cannot quantise it: {err}") from err
    return model


def _shown(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def logits_of(output: Any) -> torch.Tensor:
    """A model's logits: the output itself, or its ``.logits`` (Hugging Face's ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"the model returned a {type(output).__name__}; a model returns its logits "
                    "as a tensor or as an object with a .logits tensor")


@torch.no_grad()
def check_outputs(model: nn.Module, x: torch.Tensor, task: str, num_classes: int) -> None:
    """Raise UserModelError unless ``model`` maps the batch ``x`` to logits of the shape a run
    of ``task`` needs: (B, classes) for images, (B, T, vocab) for text."""
    was_training = model.training
    model.eval()
    try:
        output = model(x)
    except Exception as err:  # noqa: BLE001 - the user's forward may raise anything
        raise UserModelError(f"its forward pass on a batch of shape {tuple(x.shape)} raised "
                             f"{type(err).__name__}: {err}") from err
    finally:
        model.train(was_training)
    try:
        out = logits_of(output)
    except TypeError as err:
        raise UserModelError(str(err)) from None
    want = (len(x), num_classes) if task == "image" else (*x.shape, num_classes)
    if tuple(out.shape) != want:
        what = "(batch, classes)" if task == "image" else "(batch, tokens, vocabulary)"
        raise UserModelError(f"it returned logits of shape {tuple(out.shape)} for a batch of "
                             f"shape {tuple(x.shape)}; a {task} run needs {what} = {want}")
