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

from suite.data.names import (
    AUGMENTATIONS,
    PLACEMENTS,
    TOKENIZERS,
    dataset_names,
    dataset_option_error,
    dataset_task,
    is_user_dataset,
)
from suite.models.names import FACTORY_ARGS, FAMILIES, is_user_model, model_names, model_norms, model_task
from suite.plugins import IMPORT_FORM, ImportFailed
from suite.quant.names import CONV_NORMS, scale_rule_names
from suite.quant.policy import KEEP_FP32, RULE_FORMS, rule_strings
from suite.quant.resolution import ACCEPTED_FORMS, parse_resolution

# Choices owned here; those of the data, models and quantisers live in their packages' torch-free
# names modules (suite/{data,models,quant}/names.py), which the torch side imports too.
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
WANDB_MODES = ("offline", "online", "disabled")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("off", "bf16", "fp16")  # autocast dtype of the forward pass; off: fp32 throughout
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")  # suite/run/layout.py
_FIXED_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "wandb_mode": WANDB_MODES,
                  "device": DEVICES, "amp": AMP_MODES, "memory_format": MEMORY_FORMATS,
                  "augment": AUGMENTATIONS, "conv_norm": CONV_NORMS, "tokenizer": TOKENIZERS,
                  "data_placement": PLACEMENTS, "keep_fp32": KEEP_FP32}


def field_choices(name: str, model: str | None = None) -> tuple[Any, ...] | None:
    """What ``--help`` lists and RunConfig accepts as the values of field ``name`` (``norm``'s
    depend on the model; ``model`` and ``dataset`` also take an import string), without
    importing torch; None for a field that is not a choice. Registered models, datasets and
    scale rules are choices too (plugins of $BITSWEEP_PLUGINS are imported for them)."""
    if name == "model":
        return model_names()
    if name == "dataset":
        return dataset_names()
    if name == "norm":
        return model_norms(model or RunConfig.model)
    if name == "scale_rule":
        return scale_rule_names()
    return _FIXED_CHOICES.get(name)


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def flag_help(name: str) -> str:
    """One line for ``--<name>``: the field's meaning, its accepted values and its default."""
    f = next(f for f in fields(RunConfig) if f.name == name)
    parts = [f.metadata["help"]]
    base, optional = _annotation(f.type)
    if name == "norm":
        parts.append("per family: " + "; ".join(f"{family}: {', '.join(('auto', *fam.norms))}"
                                                for family, fam in FAMILIES.items())
                     + "; user models: auto")
    elif name == "precision":
        parts.append(f"one of {ACCEPTED_FORMS}")
    elif name == "device":
        parts.append(f"one of {', '.join(DEVICES)} or cuda:<index>")
    elif choices := field_choices(name):
        parts.append(f"one of {', '.join(map(str, choices))}")
        if name in ("model", "dataset"):
            parts[-1] += f", or an import string {IMPORT_FORM.replace('attribute', _CALLED[name])}"
    elif base == "bool":
        parts.append("true, false or null" if optional else "true or false")
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return f"{'; '.join(parts)} (default: {_shown(default)})"


class ConfigError(ValueError):
    """A RunConfig field has a bad value; the message names the field and what is accepted."""


def _field(default: Any, meaning: str) -> Any:
    """A RunConfig field and its one-line meaning, which ``bitsweep train --help`` shows."""
    return field(default=default, metadata={"help": meaning})


def _args_field(meaning: str) -> Any:
    """A mapping of a user factory's or loader's arguments: {} by default, and left out of the
    config's hash (a dict has none; equality still compares it)."""
    return field(default_factory=dict, hash=False, metadata={"help": meaning})


_CALLED = {"model": "factory", "dataset": "loader"}


@dataclass(frozen=True)
class RunConfig:
    # what is trained
    model: str = _field("cnn", "architecture: a preset of the fc, cnn, vit (images) or lm (text) "
                               "family, a registered model, or the user's factory as an import "
                               "string (docs/extending.md)")
    width: float = _field(1.0, "multiplies every channel count and hidden size (0.5: half as wide)")
    depth: int | None = _field(None, "hidden layers (fc), conv blocks (cnn) or transformer blocks (vit, "
                                     "lm); null: the preset's")
    norm: str = _field("auto", "normalisation layers; auto: the family's choice for the precision")
    model_args: dict[str, Any] = _args_field("keyword arguments of a user model's factory, besides "
                                             "input_shape, num_classes and width (YAML/JSON "
                                             "mapping)")
    # on what
    dataset: str = _field("digits", "what it trains on: an image dataset for fc, cnn and vit, a text "
                                    "corpus for lm; or a registered dataset, or the user's loader "
                                    "as an import string (docs/extending.md)")
    dataset_args: dict[str, Any] = _args_field("keyword arguments of a user dataset's loader "
                                               "(YAML/JSON mapping)")
    subset: int | None = _field(None, "keep n training examples per class (images) or the first n "
                                      "windows (text); null: all")
    block_size: int = _field(64, "token window of the text corpora: the lm's context length")
    tokenizer: str = _field("char", "tokens of the text corpora: characters, or WordPiece learnt from "
                                    "the train split (images: char)")
    vocab_size: int | None = _field(None, "WordPiece vocabulary size (tokenizer wordpiece only); null: "
                                          "the dataset's default")
    image_size: int | None = _field(None, "side of the square images a resizable dataset (food101) is "
                                          "decoded to; null: the dataset's CPU-sized default")
    data_dir: str | None = _field(None, "where datasets are looked for and downloaded to; null: "
                                        "$BITSWEEP_DATA_DIR, else ~/.cache/bitsweep/data")
    augment: str = _field("none", "training-time augmentation of images (text takes none)")
    # at which weight resolution
    precision: str = _field("fp32", "weight resolution of every weight-bearing layer")
    scale_rule: str = _field("gauss", "how a level grid's step is set from the weights")
    per_channel: bool = _field(False, "one grid scale per output channel instead of one per tensor")
    quantize_bias: bool | None = _field(None, "put biases on the grid too; null: yes at bnn, no (fp32) "
                                              "for level grids")
    conv_norm: str = _field("chw", "axes a bnn conv normalises each example over: all of C, H, W, "
                                   "channels at each pixel (c), or each channel over space (hw)")
    layers: tuple[str, ...] = field(default_factory=tuple, metadata={
        "help": "per-layer resolutions, first match wins: 'pattern=resolution' rules (a glob on "
                "module names, or re:<regex>; fp32 allowed), comma-separated on the command line"})
    keep_fp32: str = _field("none", "keep the first and/or last weight layer (in module order: the "
                                    "input's and the output head) at fp32")
    # how
    epochs: int = _field(10, "training epochs")
    batch_size: int = _field(128, "training batch size (evaluation batches hold at least 256)")
    optimizer: str = _field("adam", "optimiser (sgd: momentum 0.9, Nesterov)")
    lr: float = _field(1e-3, "peak learning rate")
    schedule: str = _field("cosine", "learning-rate decay after the warm-up, per step")
    warmup_epochs: float = _field(0.0, "linear learning-rate warm-up, in epochs (fractions allowed)")
    weight_decay: float = _field(0.0, "the optimiser's weight decay")
    grad_clip: float | None = _field(None, "clip the gradient norm to this; null: no clipping")
    amp: str = _field("off", "mixed precision: the forward pass autocast to bf16, or to fp16 (CUDA "
                             "only, loss-scaled); weights, optimiser state and quantisers stay fp32")
    diverge_loss: float = _field(50.0, "a training loss above this (or NaN/inf) stops the run as "
                                       "diverged, which is a result")
    seed: int = _field(0, "seed of initialisation, shuffling, augmentation and the subset")
    # what is measured besides
    track_oscillation: bool = _field(False, "record the weight oscillation rate per epoch (levels "
                                            "read after every step: slower on small models)")
    device: str = _field("auto", "where it trains; auto: cuda, else mps, else cpu")
    threads: int | None = _field(None, "torch CPU threads; null: all cores but one (W&B gets that one)")
    memory_format: str = _field("auto", "layout of the convolutions' tensors; auto: channels_last where "
                                        "it was measured faster (CNNs on colour images on CPU)")
    data_placement: str = _field("auto", "where the data sits while training: on the device, or "
                                         "streamed (host memory, each batch copied over); "
                                         "auto: on the device when it takes at most half its free "
                                         "memory")
    devices: int = _field(1, "train data-parallel (DDP) on this many devices: CPU processes or GPUs; "
                             "batch_size stays the global batch, split evenly across them")
    # where it is logged
    wandb_mode: str = _field("offline", "W&B logging (offline: local files, never a prompt)")
    wandb_project: str = _field("bitsweep", "W&B project")
    wandb_group: str | None = _field(None, "W&B group; null: the configuration without its seed")
    tags: tuple[str, ...] = field(default_factory=tuple,
                                  metadata={"help": "extra W&B tags (comma-separated on the command line)"})

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
            if base.startswith("dict"):
                object.__setattr__(self, f.name, self._plain_mapping(f.name, value))

    def _plain_mapping(self, name: str, value: Any) -> dict[str, Any]:
        """A JSON-able mapping with string keys, as a plain dict (it is recorded in config.json,
        model.json and the sweep's storage, and hashed into the fingerprint)."""
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self._bad(name, "must be a mapping of argument names to values")
        try:
            return json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise self._bad(name, f"its values must be JSON data (numbers, strings, lists, "
                                  f"mappings): {err}") from None

    def _check_values(self) -> None:
        self._check_sources()
        try:
            res = parse_resolution(self.precision)
        except ValueError as err:
            raise self._bad("precision", f"accepted: {ACCEPTED_FORMS}") from err
        object.__setattr__(self, "precision", res.label)
        for name in ("augment", "optimizer", "schedule", "wandb_mode", "norm", "conv_norm",
                     "scale_rule", "tokenizer", "amp", "data_placement",
                     "memory_format", "keep_fp32"):
            options = field_choices(name, self.model)
            if getattr(self, name) not in options:
                raise self._bad(name, f"choose one of {', '.join(options)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise self._bad("device", f"choose one of {', '.join(DEVICES)} or cuda:<index>")
        for names, holds, why in _BOUNDS:
            for name in names:
                if not holds(getattr(self, name)):
                    raise self._bad(name, why)
        self._check_devices()
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise self._bad("warmup_epochs", f"must be shorter than epochs={self.epochs}")
        if not isinstance(self.tags, (list, tuple)) or not all(isinstance(t, str) for t in self.tags):
            raise self._bad("tags", "must be a list of strings")
        try:  # stored as canonical 'pattern=label' strings, however they were given
            object.__setattr__(self, "layers", rule_strings(self.layers))
        except ValueError as err:
            raise self._bad("layers", f"{err}; give {RULE_FORMS}") from None
        model_kind, data_kind = model_task(self.model), dataset_task(self.dataset)
        if model_kind and data_kind and model_kind != data_kind:
            kind = "a text corpus" if model_kind == "text" else "an image dataset"
            raise self._bad("dataset", f"model {self.model!r} needs {kind}")
        text_data = data_kind == "text"
        if text_data and self.augment != "none":
            raise self._bad("augment", "text corpora take no augmentation; use none")
        if text_data and self.memory_format == "channels_last":
            raise self._bad("memory_format", "channels_last is a layout of image batches; a text "
                                             "model takes token windows, use auto or contiguous")
        # the dataset's own rule (an option it would ignore mislabels a run); its message names
        # the field, the value and the fix
        if why := dataset_option_error(self.dataset, image_size=self.image_size,
                                       tokenizer=self.tokenizer, vocab_size=self.vocab_size):
            raise ConfigError(why)

    def _check_sources(self) -> None:
        """model and dataset: a built-in or registered name, or the user's import string (its
        form only: it is imported when the run is prepared); their arguments go with the user's
        code only."""
        try:
            models, datasets = field_choices("model"), field_choices("dataset")
        except ImportFailed as err:  # a module of $BITSWEEP_PLUGINS
            raise ConfigError(str(err)) from None
        for name, known, user in (("model", models, is_user_model(self.model)),
                                  ("dataset", datasets, is_user_dataset(self.dataset))):
            value, args = getattr(self, name), f"{name}_args"
            if value not in known and not user:
                raise self._bad(name, f"unknown {name}; known: {', '.join(known)}; or the "
                                      f"user's {_CALLED[name]} as an import string "
                                      f"({IMPORT_FORM.replace('attribute', _CALLED[name])})")
            if getattr(self, args) and not user:
                raise ConfigError(f"{args}={getattr(self, args)!r}: only a user {name} (an import "
                                  f"string or a registered name) takes arguments; {name} "
                                  f"{value!r} is built in, leave {args} empty")
        if taken := sorted(set(self.model_args) & set(FACTORY_ARGS)):
            raise self._bad("model_args", f"the run passes {', '.join(taken)} itself (from the "
                                          "data and the width field); leave them out")
        if is_user_model(self.model) and self.depth is not None:
            raise self._bad("depth", f"a user model takes its own arguments: put depth in "
                                     f"model_args (model={self.model!r})")

    def _check_devices(self) -> None:
        if self.devices < 1:
            raise self._bad("devices", "must be >= 1")
        if self.devices == 1:
            return
        if self.batch_size % self.devices:
            # each device takes an equal share of every global batch
            raise ConfigError(f"batch_size={self.batch_size} is not divisible by "
                              f"devices={self.devices}: the global batch is split evenly across the "
                              f"devices; use a batch_size that is a multiple of {self.devices}")
        if self.device == "mps" or self.device.startswith("cuda:"):
            raise self._bad("device", f"devices={self.devices} trains on cpu or on cuda:0 .. "
                                      f"cuda:{self.devices - 1}; use device=cpu, cuda or auto")

    @property
    def resolution(self):  # noqa: ANN201 - Resolution, imported lazily above
        return parse_resolution(self.precision)

    @property
    def task(self) -> str | None:
        """image or text; None for a user dataset whose loader alone says (the run records it)."""
        return dataset_task(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # JSON's form of the tuples: what W&B, config.json and a sweep's attrs give back
        d["tags"] = list(self.tags)
        d["layers"] = list(self.layers)
        return d

    def to_file_dict(self) -> dict[str, Any]:
        """What a run directory's config.json and its packed model's header record: ``to_dict``
        without the fields added later while they hold the value every earlier run had
        (``_ADDED``, ``_ADDED_UNTRAINED``), so the files of a configuration read as they did
        before those fields existed (the 1-bit FC's packed file stays 30x smaller than fp32);
        ``from_dict`` fills them back in."""
        later = {**_ADDED, **_ADDED_UNTRAINED}
        return {k: v for k, v in self.to_dict().items() if not (k in later and v == later[k])}

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
        trained = {k: v for k, v in self.to_dict().items()
                   if k not in skip and not (k in _ADDED and v == _ADDED[k])}
        return hashlib.sha1(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:8]


# Fields that do not change what is trained: left out of fingerprints.
_NOT_TRAINED = frozenset({"device", "threads", "data_dir", "wandb_mode", "wandb_project",
                          "wandb_group", "tags", "track_oscillation", "data_placement",
                          "memory_format"})
# Fields of _NOT_TRAINED added after runs were committed, with the value those runs had: their
# run files leave them out while they hold it (to_file_dict).
_ADDED_UNTRAINED: dict[str, Any] = {"track_oscillation": False, "data_placement": "auto",
                                    "memory_format": "auto"}
# Trained fields added after studies were committed, with the value every earlier run had: left
# out of the fingerprint while they hold it, so a finished cell keeps its key (a new key would
# queue the cell again). A field added later joins this table with its old behaviour's value.
_ADDED: dict[str, Any] = {"image_size": None, "tokenizer": "char", "vocab_size": None, "amp": "off",
                          "devices": 1, "model_args": {}, "dataset_args": {}, "layers": [],
                          "keep_fp32": "none"}
# Field rules beyond the type: (fields, holds for a valid value, what the error says).
_BOUNDS: tuple[tuple[tuple[str, ...], Any, str], ...] = (
    (("epochs", "batch_size", "block_size"), lambda v: v >= 1, "must be >= 1"),
    (("width", "lr", "diverge_loss"), lambda v: v > 0, "must be > 0"),
    (("weight_decay", "warmup_epochs"), lambda v: v >= 0, "must be >= 0"),
    (("subset", "depth", "threads", "image_size", "vocab_size"), lambda v: v is None or v >= 1,
     "must be >= 1 (or null)"),
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
