"""The datasets' names, tasks and option rules, and the data knobs' choices: plain Python, so a
RunConfig or a sweep file is validated without importing torch (catalog.py holds the loaders and
checks it has one per name).

The user's own data: a loader named by an import string, ``dataset: "package.module:loader"``, or
by a short name given with ``register_dataset(name, loader, task=...)``; what a loader returns is
suite/data/user.py's contract (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from suite.plugins import import_string_of, is_import_string, load_plugins

DATASETS: tuple[str, ...] = ("cifar10", "digits", "fashion-mnist", "food101", "mnist", "stdlib-text",
                             "tinyshakespeare", "wikitext103", "wikitext2")
EMBEDDED: tuple[str, ...] = ("digits", "stdlib-text")  # never need a file or the network
TOKENIZERS: tuple[str, ...] = ("char", "wordpiece")
TEXT_DATASETS: tuple[str, ...] = ("stdlib-text", "tinyshakespeare", "wikitext103", "wikitext2")
RESIZABLE: tuple[str, ...] = ("food101",)  # decoded from files of any size: image_size applies
AUGMENTATIONS: tuple[str, ...] = ("none", "standard", "strong")  # suite/data/augment.py
IMAGE_KINDS: tuple[str, ...] = ("digit", "natural")  # what an augmentation treats images as
# RunConfig.data_placement's choices (suite/data/placement.py): auto decides by size, the others
# force a path.
PLACEMENTS: tuple[str, ...] = ("auto", "device", "stream")
# The RunConfig fields that say what load_dataset loads, and how a run's values become its
# arguments (load_request): the one list train.py's cache and a sweep's data check share.
LOAD_FIELDS: tuple[str, ...] = ("dataset", "data_dir", "subset", "seed", "block_size",
                                "image_size", "tokenizer", "vocab_size", "dataset_args")


def load_request(config: Any) -> dict[str, Any]:
    """load_dataset's keyword arguments for a run of ``config`` (a RunConfig): the seed picks
    the subset only, so without one every seed loads the same data (and shares it)."""
    request = {name: getattr(config, name) for name in LOAD_FIELDS}
    request["name"] = request.pop("dataset")
    request["dataset_args"] = dict(request["dataset_args"])
    if request["subset"] is None:
        request["seed"] = 0
    return request


@dataclass(frozen=True)
class UserDataset:
    name: str
    loader: Callable[..., Any]
    task: str | None  # None: the loader says (its ``task``)


_USER: dict[str, UserDataset] = {}


def register_dataset(name: str, loader: Callable[..., Any], *, task: str | None = None,
                     replace: bool = False) -> None:
    """Make ``loader`` a dataset a run can name: ``RunConfig(dataset=name)``. It is called with
    the run's ``dataset_args`` as keyword arguments and returns the splits (suite/data/user.py,
    docs/extending.md). ``task``: "image" or "text", known before it loads (a wrong model is then
    refused before a run starts); None: the loader's result says."""
    if not isinstance(name, str) or not name or name in DATASETS or is_import_string(name):
        raise ValueError(f"register_dataset: name {name!r} must be a non-empty string that is not "
                         "a built-in dataset or an import string")
    if not callable(loader):
        raise TypeError(f"register_dataset({name!r}): the loader must be callable, got "
                        f"{type(loader).__name__}")
    if task is not None and task not in ("image", "text"):
        raise ValueError(f"register_dataset({name!r}): task={task!r}; choose image or text")
    if name in _USER and not replace and _USER[name].loader is not loader:
        raise ValueError(f"dataset {name!r} is already registered; pass replace=True to replace it")
    _USER[name] = UserDataset(name, loader, task)


def registered_datasets() -> dict[str, UserDataset]:
    load_plugins()
    return dict(_USER)


def dataset_names() -> tuple[str, ...]:
    """Every dataset name a RunConfig accepts (import strings besides): built-in, registered."""
    return DATASETS + tuple(sorted(registered_datasets()))


def is_user_dataset(name: str) -> bool:
    return name not in DATASETS and (is_import_string(name) or name in registered_datasets())


def loader_string(name: str) -> str | None:
    """The import string of user dataset ``name``'s loader (None: not importable)."""
    if is_import_string(name):
        return name
    user = registered_datasets().get(name)
    return import_string_of(user.loader) if user else None


def dataset_task(name: str) -> str | None:
    """``text`` for the corpora (token windows), ``image`` for the other built-in sets; a user
    dataset's registered task, or None when only its loader knows."""
    if is_user_dataset(name):
        user = registered_datasets().get(name)
        return user.task if user else None
    return "text" if name in TEXT_DATASETS else "image"


def _positive_or_none(field: str, value: object) -> str | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        return f"{field}={value!r} must be a positive integer or None"
    return None


def dataset_option_error(name: str, *, image_size: int | None = None, tokenizer: str = "char",
                         vocab_size: int | None = None) -> str | None:
    """Why an option does not fit dataset ``name`` (naming the option, its value and the fix), or
    None. An option the dataset has no use for is refused: silently ignoring it would mislabel a
    run. load_dataset and RunConfig both ask here."""
    if why := _positive_or_none("image_size", image_size) or _positive_or_none("vocab_size", vocab_size):
        return why
    if is_user_dataset(name):
        # the user's loader gets dataset_args only: the built-in sets' options would be ignored
        for option, value, unset in (("image_size", image_size, None), ("tokenizer", tokenizer, "char"),
                                     ("vocab_size", vocab_size, None)):
            if value != unset:
                return (f"{option}={value!r} applies to the built-in datasets only; pass what "
                        f"{name!r} needs in dataset_args and leave {option}={unset!r}")
        return None
    if image_size is not None and name not in RESIZABLE:
        return (f"image_size={image_size} applies only to {', '.join(RESIZABLE)}; {name!r} has a "
                "fixed size, leave image_size=None")
    if tokenizer not in TOKENIZERS:
        return f"tokenizer={tokenizer!r} is unknown; choose one of {', '.join(TOKENIZERS)}"
    if tokenizer != "char" and name not in TEXT_DATASETS:
        return (f"tokenizer={tokenizer!r} applies only to the text corpora "
                f"({', '.join(TEXT_DATASETS)}); {name!r} is an image dataset, use tokenizer='char' "
                "(the default)")
    if vocab_size is not None and tokenizer != "wordpiece":
        return (f"vocab_size={vocab_size} applies only to tokenizer='wordpiece'; the char vocabulary "
                "is the corpus's own characters, leave vocab_size=None")
    return None
