"""Model zoo: FC, CNN, ViT and LM families built only from suite.quant layers, so one QuantConfig
sets the resolution of every weight (see registry.py for names and the spec format)."""

from suite.models.cnn import CNN, CNNConfig
from suite.models.fc import FC, FCConfig
from suite.models.lm import LM, LMConfig
from suite.models.registry import (
    MODELS,
    build_model,
    model_from_spec,
    model_norms,
    model_spec,
    model_task,
)
from suite.models.vit import ViT, ViTConfig

__all__ = [
    "CNN", "FC", "LM", "MODELS", "CNNConfig", "FCConfig", "LMConfig", "ViT", "ViTConfig",
    "build_model", "model_from_spec", "model_norms", "model_spec", "model_task",
]
