"""The YAML files a user writes (sweep files, ``bitsweep train --config``), read strictly.

PyYAML keeps the last of two equal keys in a mapping, so a file saying ``epochs: 1`` and later
``epochs: 3`` would train 3 epochs without a word; here it is refused, naming the key and both
lines. A file that is not UTF-8 text (a binary picked by mistake) is refused with a message
instead of a decoding traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A YAML file cannot be read as written; the message names the file and, where known, the
    line."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may repeat base's keys
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: SafeLoader says so itself below
                continue
            line = key_node.start_mark.line + 1
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen} and {line}); keep one",
                    key_node.start_mark)
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """The document in ``text``; ``where`` (a file name) starts the error message."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise YamlFileError(f"{where}{line}: not valid YAML: {getattr(err, 'problem', None) or err}"
                            ) from None


def read_yaml(path: str | Path) -> tuple[Any, str]:
    """``(document, text)`` of the YAML file at ``path`` (the text gives later errors their line
    numbers). A missing or unreadable file raises OSError; a file that is not UTF-8 text or not
    valid YAML (a duplicate key included) raises YamlFileError."""
    p = Path(path)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YamlFileError(f"{p}: not a YAML text file (byte {data[err.start]:#04x} at offset "
                            f"{err.start} is not UTF-8); give a YAML file") from None
    return parse_yaml(text, str(p)), text
