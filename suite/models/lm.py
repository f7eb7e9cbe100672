"""Decoder-only transformer language model: paper 1's BLM (arXiv 2509.07025, Algorithm 8).

    QuantEmbedding(token) + QuantEmbedding(position) -> norm
    -> depth x post-norm Block (causal attention, FFN d -> 2d gelu -> d)
    -> head: (QuantLinear -> gelu) per hidden width -> QuantLinear(vocab) -> logits at every position

At bnn each embedding is paper 1's BEMBL, a binary normalized dense layer on one-hot tokens or
positions (row lookup + binary bias + normalisation), every Linear a BNFCL, every norm
parameter-free; the presets then have exactly the parameter counts derived from the paper's
Table 3 (154,406,714 and 332,855,098; docs/papers.md §1.6). At other resolutions the norms are
LayerNorms with fp32 gain and shift, as in the paper's 32-bit model, and embeddings have no bias.

Norm (``norm`` option): ``post`` (paper 1, the default for ``auto``) or ``pre`` (GPT-2 style:
no norm after the embedding, a final norm before the head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from suite.models.common import check_classes, check_depth, resolve_norm, scaled
from suite.models.names import FAMILIES
from suite.models.transformer import Block
from suite.quant import QuantConfig, QuantEmbedding, QuantLinear, make_norm

# what the family takes, its norm choices besides auto, and its presets: suite/models/names.py
TASK, NORMS, PRESETS = FAMILIES["lm"].task, FAMILIES["lm"].norms, FAMILIES["lm"].presets


@dataclass(frozen=True)
class LMConfig:
    vocab_size: int
    max_len: int
    dim: int
    heads: int
    depth: int
    ff_hidden: int
    head_hidden: tuple[int, ...]
    norm: str  # "post" | "pre"


def make_config(preset: str, *, input_shape: tuple[int, ...], num_classes: int, width: float,
                depth: int | None, norm: str, qconfig: QuantConfig) -> LMConfig:
    base = PRESETS[preset]
    shape = tuple(input_shape)
    if len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 1:
        raise ValueError(f"{preset} needs input_shape (max_len,) with max_len >= 1, "
                         f"got {input_shape!r}")
    dim = scaled(base["dim"], width, multiple=base["heads"])
    return LMConfig(
        vocab_size=check_classes(num_classes),
        max_len=shape[0],
        dim=dim,
        heads=base["heads"],
        depth=check_depth(depth) or base["depth"],
        ff_hidden=2 * dim,  # paper 1: ff_dim = 2 * emb_dim
        head_hidden=tuple(scaled(h, width) for h in base["head_hidden"]),
        norm=resolve_norm(norm, preset, NORMS, "post", "post", qconfig),
    )


class LM(nn.Module):
    def __init__(self, cfg: LMConfig, qconfig: QuantConfig) -> None:
        super().__init__()
        self.cfg = cfg
        post = cfg.norm == "post"
        self.tok_embed = QuantEmbedding(cfg.vocab_size, cfg.dim, qconfig=qconfig)
        self.pos_embed = QuantEmbedding(cfg.max_len, cfg.dim, qconfig=qconfig)
        self.register_buffer("positions", torch.arange(cfg.max_len), persistent=False)
        self.embed_norm = make_norm(qconfig, cfg.dim) if post else nn.Identity()
        self.blocks = nn.Sequential(*(
            Block(cfg.dim, cfg.heads, cfg.ff_hidden, qconfig, causal=True, post_norm=post)
            for _ in range(cfg.depth)
        ))
        self.final_norm = nn.Identity() if post else make_norm(qconfig, cfg.dim)
        dims = (cfg.dim, *cfg.head_hidden)
        self.head_mlp = nn.ModuleList(
            QuantLinear(a, b, qconfig=qconfig) for a, b in zip(dims[:-1], dims[1:])
        )
        self.head = QuantLinear(dims[-1], cfg.vocab_size, qconfig=qconfig)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.cfg.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.cfg.max_len}")
        x = self.tok_embed(idx) + self.pos_embed(self.positions[:t])
        x = self.final_norm(self.blocks(self.embed_norm(x)))
        for layer in self.head_mlp:
            x = F.gelu(layer(x))
        return self.head(x)
