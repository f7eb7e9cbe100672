"""Vision transformer.

    patches (p x p, flattened) -> QuantLinear -> + QuantEmbedding(patch position)
    -> depth x Block -> mean over patches -> QuantLinear head -> logits

Every weight is quantised: the patch embedding is a QuantLinear on flattened patches (the same
map as a stride-p conv, but at bnn it normalises each patch token over its features, as paper 1's
dense layers do per token, where a bnn conv would normalise the whole image at once); positions
are a QuantEmbedding; the class token is replaced by mean-pooling, so no fp32 token remains.

Norm (``norm`` option): ``pre`` (ViT's usual pre-norm blocks plus a final norm) or ``post``
(paper 1's post-norm blocks, with a norm after the embedding sum as in its LM). ``auto`` is
``post`` at bnn, matching paper 1's binary transformer, and ``pre`` otherwise. Norms come from
``make_norm``: parameter-free at bnn, LayerNorm (fp32 gain and shift) elsewhere.

Patch size: the smallest divisor of the image side giving at most 8 patches per side and at
least 2 pixels per patch: 8x8 -> 2 (16 tokens), 28x28 -> 4 (49), 32x32 -> 4 (64), 256 -> 32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from suite.models.common import check_classes, check_depth, image_shape, resolve_norm, scaled
from suite.models.names import FAMILIES
from suite.models.transformer import Block
from suite.quant import QuantConfig, QuantEmbedding, QuantLinear, make_norm

# what the family takes, its norm choices besides auto, and its presets: suite/models/names.py
TASK, NORMS, PRESETS = FAMILIES["vit"].task, FAMILIES["vit"].norms, FAMILIES["vit"].presets


@dataclass(frozen=True)
class ViTConfig:
    in_channels: int
    image_size: tuple[int, int]
    num_classes: int
    patch: int
    dim: int
    heads: int
    depth: int
    ff_hidden: int
    norm: str  # "pre" | "post"


def patch_size(h: int, w: int) -> int:
    side = math.gcd(h, w)
    lower = max(2, math.ceil(max(h, w) / 8))
    return next((p for p in range(lower, side + 1) if side % p == 0), side)


def make_config(preset: str, *, input_shape: tuple[int, ...], num_classes: int, width: float,
                depth: int | None, norm: str, qconfig: QuantConfig) -> ViTConfig:
    base = PRESETS[preset]
    c, h, w = image_shape(input_shape, preset)
    dim = scaled(base["dim"], width, multiple=base["heads"])
    return ViTConfig(
        in_channels=c,
        image_size=(h, w),
        num_classes=check_classes(num_classes),
        patch=patch_size(h, w),
        dim=dim,
        heads=base["heads"],
        depth=check_depth(depth) or base["depth"],
        ff_hidden=base["mlp_ratio"] * dim,
        norm=resolve_norm(norm, preset, NORMS, "post", "pre", qconfig),
    )


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig, qconfig: QuantConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.patch
        n_patches = (cfg.image_size[0] // p) * (cfg.image_size[1] // p)
        post = cfg.norm == "post"
        self.patch_embed = QuantLinear(cfg.in_channels * p * p, cfg.dim, qconfig=qconfig)
        self.pos_embed = QuantEmbedding(n_patches, cfg.dim, qconfig=qconfig)
        self.register_buffer("positions", torch.arange(n_patches), persistent=False)
        self.embed_norm = make_norm(qconfig, cfg.dim) if post else nn.Identity()
        self.blocks = nn.Sequential(*(
            Block(cfg.dim, cfg.heads, cfg.ff_hidden, qconfig, causal=False, post_norm=post)
            for _ in range(cfg.depth)
        ))
        self.final_norm = nn.Identity() if post else make_norm(qconfig, cfg.dim)
        self.head = QuantLinear(cfg.dim, cfg.num_classes, qconfig=qconfig)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, patches, C*p*p), patch pixels in the order a conv kernel uses."""
        b, c, h, w = x.shape
        p = self.cfg.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.patchify(x)) + self.pos_embed(self.positions)
        x = self.final_norm(self.blocks(self.embed_norm(x)))
        return self.head(x.mean(dim=1))
