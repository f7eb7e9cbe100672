"""Model zoo: FC, CNN, ViT and LM families built only from suite.quant layers, so one QuantConfig
sets the resolution of every weight (see registry.py for names and the spec format), and the
user's own models (names.py, user.py).

Names load their modules on first use: ``suite.models.names`` (every model name, task and norm
choice) is plain Python, so validating a RunConfig imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CNN": "cnn", "CNNConfig": "cnn", "FC": "fc", "FCConfig": "fc", "LM": "lm", "LMConfig": "lm",
    "ViT": "vit", "ViTConfig": "vit",
    **dict.fromkeys(("MODELS", "model_names", "model_norms", "model_task", "register_model"),
                    "names"),
    **dict.fromkeys(("build_model", "model_from_spec", "model_spec"), "registry"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'suite.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"suite.models.{_EXPORTS[name]}"), name)
