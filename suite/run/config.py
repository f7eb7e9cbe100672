"""RunConfig: every knob of one training run, validated on construction.

A sweep trial, a `bitsweep train` command line and a W&B agent call all end in one RunConfig, so
a bad value fails here, before anything is created, with a message naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from suite.quant.resolution import ACCEPTED_FORMS, parse_resolution

# Choices owned here; those of the data, models and quantisers are read from their modules.
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
WANDB_MODES = ("offline", "online", "disabled")
DEVICES = ("auto", "cpu", "cuda", "mps")


def field_choices(name: str, model: str | None = None) -> tuple[str, ...] | None:
    """The accepted values of RunConfig field ``name`` (``norm``'s depend on the model), or None
    for a field that is not a choice. Imported lazily: the owners import torch."""
    if name == "norm":
        from suite.models import model_norms

        return model_norms(model or RunConfig.model)
    if name == "augment":
        from suite.data import AUGMENTATIONS

        return AUGMENTATIONS
    if name == "conv_norm":
        from suite.quant.layers import CONV_NORM_AXES

        return tuple(CONV_NORM_AXES)
    if name == "scale_rule":
        from suite.quant.scale import SCALE_RULES

        return SCALE_RULES
    return {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "wandb_mode": WANDB_MODES}.get(name)


class ConfigError(ValueError):
    """A RunConfig field has a bad value; the message names the field and what is accepted."""


@dataclass(frozen=True)
class RunConfig:
    # what is trained
    model: str = "cnn"
    width: float = 1.0
    depth: int | None = None
    norm: str = "auto"
    # on what
    dataset: str = "digits"
    subset: int | None = None
    block_size: int = 64
    data_dir: str | None = None
    augment: str = "none"
    # at which weight resolution
    precision: str = "fp32"
    scale_rule: str = "gauss"
    per_channel: bool = False
    quantize_bias: bool | None = None
    conv_norm: str = "chw"
    # how
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float | None = None
    diverge_loss: float = 50.0
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    # where it is logged
    wandb_mode: str = "offline"
    wandb_project: str = "bitsweep"
    wandb_group: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()
        object.__setattr__(self, "tags", tuple(self.tags))

    def _bad(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"{name}={getattr(self, name)!r}: {why}")

    def _check_types(self) -> None:
        """Each field against its annotation (ints given as 2.0 become 2, numbers become floats)."""
        for f in fields(self):
            value = getattr(self, f.name)
            base, optional = _annotation(f.type)
            if value is None:
                if not optional:
                    raise self._bad(f.name, "must not be null")
                continue
            # precision may also be a number (YAML `precision: 2.32`); parse_resolution checks it
            if base == "str" and f.name != "precision" and not isinstance(value, str):
                raise self._bad(f.name, "must be a string")
            if base == "int":
                if isinstance(value, float) and value.is_integer():
                    object.__setattr__(self, f.name, int(value))
                elif isinstance(value, bool) or not isinstance(value, int):
                    raise self._bad(f.name, "must be an integer")
            if base == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise self._bad(f.name, "must be a number")
                if not math.isfinite(value):
                    raise self._bad(f.name, "must be finite")
                object.__setattr__(self, f.name, float(value))
            if base == "bool" and not isinstance(value, bool):
                raise self._bad(f.name, "must be true or false")

    def _check_values(self) -> None:
        from suite.data import DATASETS, dataset_task
        from suite.models import MODELS, model_task

        if self.model not in MODELS:
            raise self._bad("model", f"unknown model; known: {', '.join(MODELS)}")
        if self.dataset not in DATASETS:
            raise self._bad("dataset", f"unknown dataset; known: {', '.join(DATASETS)}")
        try:
            res = parse_resolution(self.precision)
        except ValueError as err:
            raise self._bad("precision", f"accepted: {ACCEPTED_FORMS}") from err
        object.__setattr__(self, "precision", res.label)
        for name in ("augment", "optimizer", "schedule", "wandb_mode", "norm", "conv_norm",
                     "scale_rule"):
            options = field_choices(name, self.model)
            if getattr(self, name) not in options:
                raise self._bad(name, f"choose one of {', '.join(options)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise self._bad("device", f"choose one of {', '.join(DEVICES)} or cuda:<index>")
        for names, holds, why in _BOUNDS:
            for name in names:
                if not holds(getattr(self, name)):
                    raise self._bad(name, why)
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise self._bad("warmup_epochs", f"must be shorter than epochs={self.epochs}")
        if not isinstance(self.tags, (list, tuple)) or not all(isinstance(t, str) for t in self.tags):
            raise self._bad("tags", "must be a list of strings")
        text_model = model_task(self.model) == "text"
        text_data = dataset_task(self.dataset) == "text"
        if text_model != text_data:
            kind = "a text corpus" if text_model else "an image dataset"
            raise self._bad("dataset", f"model {self.model!r} needs {kind}")
        if text_data and self.augment != "none":
            raise self._bad("augment", "text corpora take no augmentation; use none")

    @property
    def resolution(self):  # noqa: ANN201 - Resolution, imported lazily above
        return parse_resolution(self.precision)

    @property
    def task(self) -> str:
        from suite.data import dataset_task

        return dataset_task(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tags"] = list(self.tags)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown RunConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def group(self) -> str:
        """W&B group: the config without the seed, so seeds of one configuration group together.

        A readable prefix of the main axes, then a short hash of every field that changes what is
        trained (all but the seed and where/how it is logged or run), so two configurations that
        differ only in, say, the scale rule never share a group."""
        if self.wandb_group:
            return self.wandb_group
        parts = [self.model, self.dataset, self.precision, f"aug-{self.augment}", f"ep{self.epochs}"]
        if self.width != 1.0:
            parts.append(f"w{self.width:g}")
        if self.subset:
            parts.append(f"sub{self.subset}")
        parts.append(f"lr{self.lr:g}")
        parts.append(self.fingerprint(with_seed=False))
        return "/".join(parts)

    def fingerprint(self, *, with_seed: bool = True) -> str:
        """Short hash of every field that changes what is trained (not where it runs or logs):
        equal fingerprints mean the same experiment. A sweep keys its cells by it, so editing a
        fixed value of a study queues new runs instead of passing old results off as new ones."""
        skip = _NOT_TRAINED if with_seed else _NOT_TRAINED | {"seed"}
        trained = {k: v for k, v in self.to_dict().items() if k not in skip}
        return hashlib.sha1(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:8]


# Fields that do not change what is trained: left out of fingerprints.
_NOT_TRAINED = frozenset({"device", "threads", "data_dir", "wandb_mode", "wandb_project",
                          "wandb_group", "tags"})
# Field rules beyond the type: (fields, holds for a valid value, what the error says).
_BOUNDS: tuple[tuple[tuple[str, ...], Any, str], ...] = (
    (("epochs", "batch_size", "block_size"), lambda v: v >= 1, "must be >= 1"),
    (("width", "lr", "diverge_loss"), lambda v: v > 0, "must be > 0"),
    (("weight_decay", "warmup_epochs"), lambda v: v >= 0, "must be >= 0"),
    (("subset", "depth", "threads"), lambda v: v is None or v >= 1, "must be >= 1 (or null)"),
    (("seed",), lambda v: 0 <= v < 2**32, "must be in 0 .. 2**32 - 1"),
    (("grad_clip",), lambda v: v is None or v > 0, "must be > 0 (or null for no clipping)"),
)


def _annotation(type_text: str) -> tuple[str, bool]:
    """("int", True) for "int | None": the base type's name and whether null is allowed."""
    parts = [p.strip() for p in str(type_text).split("|")]
    optional = "None" in parts
    base = next((p for p in parts if p != "None"), "None")
    return base, optional


def config_fields() -> dict[str, str]:
    """Field name -> type string, for the CLI and the sweep-file validator."""
    return {f.name: str(f.type) for f in fields(RunConfig)}
