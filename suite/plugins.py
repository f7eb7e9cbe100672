"""The user's code: import strings (``package.module:attribute``) and plugin modules.

A RunConfig's ``model`` or ``dataset`` may name the user's factory or loader by an import string;
``register_model``/``register_dataset``/``register_scale_rule`` calls made by the modules listed
in ``$BITSWEEP_PLUGINS`` (comma-separated module names) give them short names. Plain Python (no
torch): a RunConfig checks an import string's form here without importing it.

Where the code is found: ``sys.path`` as the process has it (so ``PYTHONPATH`` and installed
packages), plus the current working directory, as ``python -m`` finds modules. Every process
of a command runs in the same directory with the same environment (sweep workers, data-parallel
ranks and W&B agents included), so each imports the same code; a sweep file's own directory is
not searched (run the command where the code is, or put it on ``PYTHONPATH``).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

PLUGINS_VAR = "BITSWEEP_PLUGINS"
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_STRING = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
IMPORT_FORM = "package.module:attribute"


class ImportFailed(ValueError):
    """An import string that does not lead to an object; the message says which part failed."""


def is_import_string(text: Any) -> bool:
    """Whether ``text`` has the form ``package.module:attribute`` (nothing is imported)."""
    return isinstance(text, str) and bool(_IMPORT_STRING.match(text))


def _search_cwd() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_object(text: str) -> Any:
    """The object an import string names: the module is imported, then the attribute path read.
    Raises ImportFailed naming the part that failed and the underlying error."""
    if not is_import_string(text):
        raise ImportFailed(f"{text!r} is not an import string of the form {IMPORT_FORM}")
    module_name, attribute = text.split(":")
    _search_cwd()
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - the user's module may raise anything on import
        raise ImportFailed(f"cannot import module {module_name!r} ({type(err).__name__}: {err}); "
                           "it is looked for in the current directory and on sys.path "
                           "(PYTHONPATH)") from err
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise ImportFailed(f"module {module_name!r} has no attribute {attribute!r}") from err
    return obj


def import_string_of(obj: Any) -> str | None:
    """The import string that leads back to ``obj`` (a module-level function or class), or None
    when there is none (a lambda, a closure, something defined in ``__main__``)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    text = f"{module}:{qualname}"
    try:
        return text if import_object(text) is obj else None
    except ImportFailed:
        return None


_loaded: set[str] = set()


def load_plugins() -> None:
    """Import the modules of ``$BITSWEEP_PLUGINS`` once each (their register_* calls run).
    Raises ImportFailed naming the variable and the module."""
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGINS_VAR, "").split(","))):
        if name in _loaded:
            continue
        _search_cwd()
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - the user's module may raise anything on import
            raise ImportFailed(f"{PLUGINS_VAR}={os.environ[PLUGINS_VAR]!r}: cannot import "
                               f"{name!r} ({type(err).__name__}: {err})") from err
        _loaded.add(name)
