"""The datasets' names, tasks and option rules: plain Python, so a RunConfig or a sweep file is
validated without importing torch (catalog.py holds the loaders and checks it has one per name).
"""

from __future__ import annotations

DATASETS: tuple[str, ...] = ("cifar10", "digits", "fashion-mnist", "food101", "mnist", "stdlib-text",
                             "tinyshakespeare", "wikitext103", "wikitext2")
EMBEDDED: tuple[str, ...] = ("digits", "stdlib-text")  # never need a file or the network
TOKENIZERS: tuple[str, ...] = ("char", "wordpiece")
TEXT_DATASETS: tuple[str, ...] = ("stdlib-text", "tinyshakespeare", "wikitext103", "wikitext2")
RESIZABLE: tuple[str, ...] = ("food101",)  # decoded from files of any size: image_size applies


def dataset_task(name: str) -> str:
    """``text`` for the corpora (token windows), ``image`` for the rest."""
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
