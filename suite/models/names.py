"""The models a run can name: the built-in families' presets, and the user's own models.

Plain Python (no torch), so a RunConfig, a sweep file and ``--help`` know every model without
building one; registry.py builds the families, suite/models/user.py the user's models.

A user model is a factory (any callable returning an ``nn.Module``) named either by an import
string, ``model: "package.module:factory"``, or by a short name given with
``register_model(name, factory, task=...)`` (in a module listed in ``$BITSWEEP_PLUGINS`` when a
command line or a sweep's workers must know it; see suite/plugins.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from suite.plugins import import_string_of, is_import_string, load_plugins

TASKS = ("image", "text")  # image: (B, C, H, W) -> (B, classes); text: (B, T) -> (B, T, vocab)


@dataclass(frozen=True)
class Family:
    task: str
    norms: tuple[str, ...]  # RunConfig.norm choices besides "auto" (which picks per resolution)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> architecture


_PAPER1_CNN = {"channels": (32, 64, 128, 256, 512), "convs_per_block": 2, "dense": (512, 256)}
FAMILIES: dict[str, Family] = {
    "cnn": Family("image", ("batch", "none"), {
        "cnn": {"channels": (16, 32, 64), "convs_per_block": 1, "kernel": 3, "dense": (64,)},
        "cnn-paper1-3x3": {**_PAPER1_CNN, "kernel": 3},
        "cnn-paper1-5x5": {**_PAPER1_CNN, "kernel": 5},
    }),
    "fc": Family("image", ("layer", "batch", "none"), {"fc": {"hidden": 256, "depth": 2}}),
    "lm": Family("text", ("post", "pre"), {
        "lm": {"dim": 64, "heads": 4, "depth": 2, "head_hidden": ()},
        "lm-paper1-small": {"dim": 768, "heads": 16, "depth": 12, "head_hidden": (4096, 2048)},
        "lm-paper1-large": {"dim": 1024, "heads": 16, "depth": 16, "head_hidden": (8192, 4096)},
    }),
    "vit": Family("image", ("pre", "post"), {"vit": {"dim": 64, "heads": 4, "depth": 2,
                                                     "mlp_ratio": 2}}),
}
MODELS: tuple[str, ...] = tuple(sorted(p for f in FAMILIES.values() for p in f.presets))
# The keyword arguments every user factory gets; model_args may not repeat them.
FACTORY_ARGS = ("input_shape", "num_classes", "width")


@dataclass(frozen=True)
class UserModel:
    name: str
    factory: Callable[..., Any]
    task: str | None  # None: whatever the data is


_USER: dict[str, UserModel] = {}


def register_model(name: str, factory: Callable[..., Any], *, task: str | None = None,
                   replace: bool = False) -> None:
    """Make ``factory`` a model a run can name: ``RunConfig(model=name)``. It is called with the
    keyword arguments ``input_shape``, ``num_classes``, ``width`` and the run's ``model_args``
    and returns an ``nn.Module`` (see docs/extending.md). ``task``: "image" or "text" when the
    model takes only one (a wrong dataset is then refused before a run starts); None: either."""
    if not isinstance(name, str) or not name or name in MODELS or is_import_string(name):
        raise ValueError(f"register_model: name {name!r} must be a non-empty string that is not a "
                         "built-in model or an import string")
    if not callable(factory):
        raise TypeError(f"register_model({name!r}): the factory must be callable, got "
                        f"{type(factory).__name__}")
    if task is not None and task not in TASKS:
        raise ValueError(f"register_model({name!r}): task={task!r}; choose one of {', '.join(TASKS)}")
    if name in _USER and not replace and _USER[name].factory is not factory:
        raise ValueError(f"model {name!r} is already registered; pass replace=True to replace it")
    _USER[name] = UserModel(name, factory, task)


def registered_models() -> dict[str, UserModel]:
    load_plugins()
    return dict(_USER)


def model_names() -> tuple[str, ...]:
    """Every model name a RunConfig accepts (import strings besides): presets, then registered."""
    return MODELS + tuple(sorted(registered_models()))


def is_user_model(name: str) -> bool:
    return name not in MODELS and (is_import_string(name) or name in registered_models())


def family_of(name: str) -> str | None:
    return next((f for f, fam in FAMILIES.items() if name in fam.presets), None)


def model_task(name: str) -> str | None:
    """``image`` (input (B, C, H, W) -> logits (B, classes)) or ``text`` ((B, T) -> (B, T,
    vocab)): what model ``name`` takes; None for a user model that takes either. Raises
    ValueError for an unknown name."""
    family = family_of(name)
    if family is not None:
        return FAMILIES[family].task
    user = registered_models().get(name)
    if user is not None:
        return user.task
    if is_import_string(name):
        return None
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(model_names())}")


def model_norms(name: str) -> tuple[str, ...] | None:
    """The ``norm`` values model ``name`` accepts ("auto" first); a user model has only auto;
    None: no such model."""
    family = family_of(name)
    if family is not None:
        return ("auto", *FAMILIES[family].norms)
    return ("auto",) if is_user_model(name) else None


def factory_string(name: str) -> str | None:
    """The import string that rebuilds user model ``name`` without its registration."""
    if is_import_string(name):
        return name
    user = registered_models().get(name)
    return import_string_of(user.factory) if user else None
