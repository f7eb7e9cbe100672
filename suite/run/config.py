"""RunConfig: every knob of one training run, validated on construction.

A sweep trial, a `bitsweep train` command line and a W&B agent call all end in one RunConfig, so
a bad value fails here, before anything is created, with a message naming the field.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from suite.quant.resolution import ACCEPTED_FORMS, parse_resolution

# Choices owned here; those of the data, models and quantisers are read from their modules.
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
WANDB_MODES = ("offline", "online", "disabled")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("off", "bf16", "fp16")  # autocast dtype of the forward pass; off: fp32 throughout


def field_choices(name: str, model: str | None = None) -> tuple[str, ...] | None:
    """The accepted values of RunConfig field ``name`` (``norm``'s depend on the model), or None
    for a field that is not a choice, imported from the modules that own them (they import
    torch). Validation reads the same constants from source (listed_choices); tests/test_help.py
    checks that the two agree."""
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
    if name == "tokenizer":
        from suite.data import TOKENIZERS

        return TOKENIZERS
    if name == "data_placement":
        from suite.data.placement import PLACEMENTS

        return PLACEMENTS
    if name == "memory_format":
        from suite.run.layout import MEMORY_FORMATS

        return MEMORY_FORMATS
    return {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "wandb_mode": WANDB_MODES,
            "amp": AMP_MODES}.get(name)


# RunConfig validation and --help need the choices of modules that import torch (seconds), so
# they read them from those modules' source instead of importing them: the same constants
# field_choices imports, and tests/test_help.py checks that both agree. A RunConfig, a sweep
# file and the report therefore validate without torch. (field, file under suite/, top-level name)
_SUITE = Path(__file__).resolve().parents[1]
_LISTED = {"augment": ("data/augment.py", "AUGMENTATIONS"),
           "conv_norm": ("quant/layers.py", "CONV_NORM_AXES"),
           "scale_rule": ("quant/scale.py", "SCALE_RULES"),
           "data_placement": ("data/placement.py", "PLACEMENTS"),
           "memory_format": ("run/layout.py", "MEMORY_FORMATS")}


@functools.cache
def _constants(relpath: str) -> dict[str, Any]:
    """The top-level tuple literals, dict literals' keys (as tuples) and string constants of
    suite/``relpath``, by name."""
    found: dict[str, Any] = {}
    for node in ast.parse((_SUITE / relpath).read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found[target.id] = value.value
            continue
        items = value.keys if isinstance(value, ast.Dict) else getattr(value, "elts", None)
        if items is not None:
            found[target.id] = tuple(k.value for k in items if isinstance(k, ast.Constant))
    return found


def model_families() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Family -> (its model presets, its norm choices besides auto), read from each
    suite/models/<family>.py that defines PRESETS and NORMS, without importing torch."""
    out = {}
    for path in sorted((_SUITE / "models").glob("*.py")):
        names = _constants(f"models/{path.name}")
        if "PRESETS" in names and "NORMS" in names:
            out[path.stem] = (names["PRESETS"], names["NORMS"])
    return out


def listed_task(model: str) -> str | None:
    """``image`` or ``text``: the TASK of the family that has preset ``model`` (None: no such
    model), as suite.models.model_task says, without importing torch."""
    family = next((f for f, (presets, _) in model_families().items() if model in presets), None)
    return _constants(f"models/{family}.py").get("TASK") if family else None


def listed_choices(name: str, model: str | None = None) -> tuple[Any, ...] | None:
    """What ``--help`` lists and RunConfig accepts as the values of field ``name`` (model,
    dataset and the fields of field_choices), without importing torch; None for a field that is
    not a choice."""
    if name == "model":
        return tuple(sorted(p for presets, _ in model_families().values() for p in presets))
    if name in ("dataset", "tokenizer"):
        from suite.data.names import DATASETS, TOKENIZERS

        return DATASETS if name == "dataset" else TOKENIZERS
    if name == "norm":
        model = model or RunConfig.model
        return next((("auto", *norms) for presets, norms in model_families().values()
                     if model in presets), None)
    if name in _LISTED:
        return _constants(_LISTED[name][0]).get(_LISTED[name][1])
    return {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "wandb_mode": WANDB_MODES,
            "device": DEVICES, "amp": AMP_MODES}.get(name)


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
        parts.append("per family: " + "; ".join(f"{family}: {', '.join(('auto', *norms))}"
                                                for family, (_, norms) in model_families().items()))
    elif name == "precision":
        parts.append(f"one of {ACCEPTED_FORMS}")
    elif name == "device":
        parts.append(f"one of {', '.join(DEVICES)} or cuda:<index>")
    elif choices := listed_choices(name):
        parts.append(f"one of {', '.join(map(str, choices))}")
    elif base == "bool":
        parts.append("true, false or null" if optional else "true or false")
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return f"{'; '.join(parts)} (default: {_shown(default)})"


class ConfigError(ValueError):
    """A RunConfig field has a bad value; the message names the field and what is accepted."""


def _field(default: Any, meaning: str) -> Any:
    """A RunConfig field and its one-line meaning, which ``bitsweep train --help`` shows."""
    return field(default=default, metadata={"help": meaning})


@dataclass(frozen=True)
class RunConfig:
    # what is trained
    model: str = _field("cnn", "architecture: a preset of the fc, cnn, vit (images) or lm (text) family")
    width: float = _field(1.0, "multiplies every channel count and hidden size (0.5: half as wide)")
    depth: int | None = _field(None, "hidden layers (fc), conv blocks (cnn) or transformer blocks (vit, "
                                     "lm); null: the preset's")
    norm: str = _field("auto", "normalisation layers; auto: the family's choice for the precision")
    # on what
    dataset: str = _field("digits", "what it trains on: an image dataset for fc, cnn and vit, a text "
                                    "corpus for lm")
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

    def _check_values(self) -> None:
        from suite.data.names import DATASETS, dataset_option_error, dataset_task

        models = listed_choices("model")
        if self.model not in models:
            raise self._bad("model", f"unknown model; known: {', '.join(models)}")
        if self.dataset not in DATASETS:
            raise self._bad("dataset", f"unknown dataset; known: {', '.join(DATASETS)}")
        try:
            res = parse_resolution(self.precision)
        except ValueError as err:
            raise self._bad("precision", f"accepted: {ACCEPTED_FORMS}") from err
        object.__setattr__(self, "precision", res.label)
        for name in ("augment", "optimizer", "schedule", "wandb_mode", "norm", "conv_norm",
                     "scale_rule", "tokenizer", "amp", "data_placement",
                     "memory_format"):
            options = listed_choices(name, self.model)
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
        text_model = listed_task(self.model) == "text"
        text_data = dataset_task(self.dataset) == "text"
        if text_model != text_data:
            kind = "a text corpus" if text_model else "an image dataset"
            raise self._bad("dataset", f"model {self.model!r} needs {kind}")
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
    def task(self) -> str:
        from suite.data.names import dataset_task

        return dataset_task(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tags"] = list(self.tags)
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
                          "devices": 1}
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
