"""What every test gets: the open registries as the test found them.

Registering a user's scale rule, model, dataset or layer type is process-wide by design; a test
that registers one must not hand it to the tests after it (a registered scale rule shows up in
the choices --help is compared with, in a fresh process that never registered it)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

# (module, registry dict, what it holds before anything is registered)
_REGISTRIES = (("suite.quant.scale", "_RULES", ("gauss", "absmean", "absmax", "lsq", "seq")),
               ("suite.quant.quantize", "_CONVERTERS", None),
               ("suite.models.names", "_USER", ()),
               ("suite.data.names", "_USER", ()))


def _registry(module: str, attr: str) -> dict | None:
    loaded = sys.modules.get(module)  # not imported: nothing registered (and no torch imported)
    return getattr(loaded, attr, None) if loaded is not None else None


@pytest.fixture(autouse=True)
def _registries_as_found() -> Iterator[None]:
    before = {(m, a): dict(reg) for m, a, _ in _REGISTRIES if (reg := _registry(m, a)) is not None}
    yield
    for module, attr, initial in _REGISTRIES:
        reg = _registry(module, attr)
        if reg is None:
            continue
        saved = before.get((module, attr))
        if saved is None:  # imported during the test: keep what importing it registered
            if initial is None:
                continue
            saved = {k: v for k, v in reg.items() if k in initial}
        reg.clear()
        reg.update(saved)
