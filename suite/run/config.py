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
from suite.quant.scale import SCALE_RULES

AUGMENTS = ("none", "standard", "strong")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
WANDB_MODES = ("offline", "online", "disabled")
# Norm choices per model family (suite/models/<family>.py resolve_norm); "auto" picks per resolution.
NORMS = {"fc": ("auto", "layer", "batch", "none"), "cnn": ("auto", "batch", "none"),
         "vit": ("auto", "pre", "post"), "lm": ("auto", "post", "pre")}
CONV_NORMS = ("chw", "c", "hw")
DEVICES = ("auto", "cpu", "cuda", "mps")


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
        from suite.data import DATASETS
        from suite.models import MODELS, model_task

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{name}={getattr(self, name)!r}: {why}")

        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                raise bad(name, f"choose one of {', '.join(options)}")

        for f in fields(self):
            value = getattr(self, f.name)
            optional = str(f.type).endswith("| None")
            if value is None and not optional:
                raise bad(f.name, "must not be null")
            # precision may also be a number (YAML `precision: 2.32`); parse_resolution checks it
            if f.type == "str" and f.name != "precision" and not isinstance(value, str):
                raise bad(f.name, "must be a string")
            if f.type in ("int", "int | None") and value is not None:
                if isinstance(value, float) and value.is_integer():
                    object.__setattr__(self, f.name, int(value))
                elif isinstance(value, bool) or not isinstance(value, int):
                    raise bad(f.name, "must be an integer")
            if f.type in ("float", "float | None") and value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise bad(f.name, "must be a number")
                if not math.isfinite(value):
                    raise bad(f.name, "must be finite")
                object.__setattr__(self, f.name, float(value))
            if f.type in ("bool", "bool | None") and value is not None and not isinstance(value, bool):
                raise bad(f.name, "must be true or false")
        if self.model not in MODELS:
            raise bad("model", f"unknown model; known: {', '.join(MODELS)}")
        if self.dataset not in DATASETS:
            raise bad("dataset", f"unknown dataset; known: {', '.join(DATASETS)}")
        try:
            res = parse_resolution(self.precision)
        except ValueError as err:
            raise bad("precision", f"accepted: {ACCEPTED_FORMS}") from err
        object.__setattr__(self, "precision", res.label)
        choice("augment", AUGMENTS)
        choice("optimizer", OPTIMIZERS)
        choice("schedule", SCHEDULES)
        choice("wandb_mode", WANDB_MODES)
        family = self.model.split("-")[0]
        choice("norm", NORMS.get(family, ("auto",)))
        choice("conv_norm", CONV_NORMS)
        choice("scale_rule", SCALE_RULES)
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise bad("device", f"choose one of {', '.join(DEVICES)} or cuda:<index>")
        for name in ("epochs", "batch_size", "block_size"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        for name in ("width", "lr", "diverge_loss"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be > 0")
        for name in ("weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise bad("warmup_epochs", f"must be shorter than epochs={self.epochs}")
        for name in ("subset", "depth", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise bad(name, "must be >= 1 (or null)")
        if not 0 <= self.seed < 2**32:
            raise bad("seed", "must be in 0 .. 2**32 - 1")
        if not isinstance(self.tags, (list, tuple)) or not all(isinstance(t, str) for t in self.tags):
            raise bad("tags", "must be a list of strings")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise bad("grad_clip", "must be > 0 (or null for no clipping)")
        text_model = model_task(self.model) == "text"
        text_data = self.dataset in _TEXT_DATASETS
        if text_model != text_data:
            kind = "a text corpus" if text_model else "an image dataset"
            raise bad("dataset", f"model {self.model!r} needs {kind}")
        if text_data and self.augment != "none":
            raise bad("augment", "text corpora take no augmentation; use none")
        object.__setattr__(self, "tags", tuple(self.tags))

    @property
    def resolution(self):  # noqa: ANN201 - Resolution, imported lazily above
        return parse_resolution(self.precision)

    @property
    def task(self) -> str:
        return "text" if self.dataset in _TEXT_DATASETS else "image"

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
_TEXT_DATASETS = ("stdlib-text", "tinyshakespeare", "wikitext2", "wikitext103")


def config_fields() -> dict[str, str]:
    """Field name -> type string, for the CLI and the sweep-file validator."""
    return {f.name: str(f.type) for f in fields(RunConfig)}
