"""Hugging Face ``transformers`` models as bitsweep user models (``pip install 'bitsweep[hf]'``).

Each factory builds a randomly initialised model from a ``transformers`` config (nothing is
downloaded) at a small size, for import strings in a run or a sweep file::

    model: "examples.hf_models:gpt2"         # dataset: stdlib-text (any text dataset)
    model: "examples.hf_models:resnet"       # dataset: digits (any image dataset)
    model: "examples.hf_models:vit"
    model_args: {n_layer: 2}                 # keyword arguments of the factory

bitsweep calls a factory with ``input_shape`` ((C, H, W) for images, (context,) for text),
``num_classes`` (the vocabulary size for text) and ``width`` (multiplies the hidden sizes), plus
the entries of ``model_args``. The models return Hugging Face output objects; bitsweep reads
their ``.logits``. ``examples`` is found on ``sys.path`` from the repository root (where
``bitsweep`` is run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn


def _scaled(size: int, width: float, multiple: int = 1) -> int:
    """``size * width`` rounded to a positive multiple of ``multiple`` (attention heads)."""
    return max(multiple, round(size * width / multiple) * multiple)


def gpt2(input_shape: Sequence[int], num_classes: int, width: float = 1.0, *, n_embd: int = 64,
         n_layer: int = 2, n_head: int = 4, dropout: float = 0.0, **_: Any) -> nn.Module:
    """A GPT-2 language model (``GPT2LMHeadModel``: token and position embeddings, ``n_layer``
    blocks whose attention and MLP use transformers' ``Conv1D``, the LM head tied to the token
    embedding) over a vocabulary of ``num_classes`` and a context of ``input_shape[0]`` tokens."""
    from transformers import GPT2Config, GPT2LMHeadModel

    (context,) = input_shape
    config = GPT2Config(
        vocab_size=num_classes, n_positions=context, n_embd=_scaled(n_embd, width, n_head),
        n_layer=n_layer, n_head=n_head, resid_pdrop=dropout, embd_pdrop=dropout,
        attn_pdrop=dropout, use_cache=False,
        # GPT-2's own 50256 lies outside a small vocabulary (transformers warns); a character
        # model has no such tokens
        bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(config)


def resnet(input_shape: Sequence[int], num_classes: int, width: float = 1.0, *,
           embedding_size: int = 16, hidden_sizes: Sequence[int] = (16, 32),
           depths: Sequence[int] = (1, 1), layer_type: str = "basic", **_: Any) -> nn.Module:
    """A ResNet image classifier (``ResNetForImageClassification``: a conv stem, then stages of
    ``layer_type`` blocks with batch norm) for ``input_shape = (C, H, W)`` images."""
    from transformers import ResNetConfig, ResNetForImageClassification

    channels = input_shape[0]
    config = ResNetConfig(
        num_channels=channels, embedding_size=_scaled(embedding_size, width),
        hidden_sizes=[_scaled(h, width) for h in hidden_sizes], depths=list(depths),
        layer_type=layer_type, num_labels=num_classes)
    return ResNetForImageClassification(config)


def vit(input_shape: Sequence[int], num_classes: int, width: float = 1.0, *, patch_size: int = 2,
        hidden_size: int = 32, num_hidden_layers: int = 2, num_attention_heads: int = 2,
        mlp_ratio: int = 2, dropout: float = 0.0, **_: Any) -> nn.Module:
    """A vision transformer classifier (``ViTForImageClassification``) on square ``(C, H, H)``
    images cut into ``patch_size`` patches."""
    from transformers import ViTConfig, ViTForImageClassification

    channels, height, _width = input_shape
    hidden = _scaled(hidden_size, width, num_attention_heads)
    config = ViTConfig(
        image_size=height, patch_size=patch_size, num_channels=channels, hidden_size=hidden,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        intermediate_size=mlp_ratio * hidden, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, num_labels=num_classes)
    return ViTForImageClassification(config)
