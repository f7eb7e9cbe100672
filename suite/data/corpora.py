"""The embedded `stdlib-text` corpus: source files every CPython install ships.

The module list is fixed and ordered by hand (not by path, which moves between versions: e.g.
zipfile became a package in 3.12). The files still change between Python releases, so the
text differs slightly across versions; DataSplits.checksum records which text a run saw.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from suite.data.errors import DatasetError

# Long-lived, pure-Python, prose-rich modules (docstrings and comments, not generated tables).
STDLIB_MODULES = (
    "argparse",
    "ast",
    "calendar",
    "collections",
    "configparser",
    "csv",
    "dataclasses",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "inspect",
    "json.decoder",
    "logging",
    "pickle",
    "pydoc",
    "random",
    "shutil",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest.case",
    "zipfile",
)
MAX_CHARS = 1_500_000
_MIN_CHARS = 200_000


def _source_path(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def stdlib_corpus(max_chars: int = MAX_CHARS) -> str:
    """Concatenated sources of STDLIB_MODULES (each after a header line), cut at `max_chars`."""
    parts: list[str] = []
    total = 0
    for module in STDLIB_MODULES:
        path = _source_path(module)
        if path is None or not path.is_file():
            continue  # missing on this install; the checksum shows the corpus changed
        chunk = f"# ==== {module} ====\n" + path.read_text(encoding="utf-8", errors="replace")
        parts.append(chunk)
        total += len(chunk)
        if total >= max_chars:
            break
    text = "".join(parts)[:max_chars]
    if len(text) < _MIN_CHARS:
        raise DatasetError(
            f"stdlib-text found only {len(text)} characters of standard-library source (needs "
            f"{_MIN_CHARS}); this Python ships without .py sources, use another text dataset"
        )
    return text
