"""Batched image augmentation in plain torch: whole batches, on their own device, seeded.

Every op draws per-example randomness as tensors from the passed generator and applies it with
gather/where, so the cost is a few kernels per batch whatever the batch size (no torchvision,
no per-example Python).

Policies (H = image height; pads and sizes scale with H so 8x8 digits get a 1 px shift):
- "none": no augmentation (make_augment returns None).
- "standard": natural images: reflect-pad round(4*H/32) px and take a random HxW crop
  (4 px at 32x32), then flip left-right with p=0.5. Digit-like images: random shift of up to
  max(1, round(H/14)) px (1 at 8x8, 2 at 28x28) over the image's own background, no flip
  (a mirrored digit is another glyph).
- "strong": "standard" followed by cutout of one square per image (side H//2 for natural
  images, as in DeVries & Taylor's CIFAR setting; H//4 for digit-like ones), centre uniform,
  clipped at the border, filled with 0 (the channel mean after normalisation) for natural
  images and with the background for digit-like ones.
Text has nothing to augment: make_augment(name, None) returns None for any valid name; callers
that want to refuse augmentation on text check image_kind themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from suite.data.names import AUGMENTATIONS, IMAGE_KINDS  # the names, without torch

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _pad(x: torch.Tensor, pad: int, kind: str) -> torch.Tensor:
    if kind == "natural":
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")
    # Digit-like images sit on a flat background, their darkest value; a replicated or reflected
    # border would smear strokes that touch the edge.
    n, c, h, w = x.shape
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    out = background.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    out[:, :, pad : pad + h, pad : pad + w] = x
    return out


def _reflect(pos: torch.Tensor, size: int) -> torch.Tensor:
    # Same mapping as F.pad(mode="reflect"): -1 -> 1, size -> size - 2.
    pos = pos.abs()
    return torch.where(pos > size - 1, 2 * (size - 1) - pos, pos)


def random_crop(
    x: torch.Tensor, pad: int, kind: str, g: torch.Generator, flip: bool = False
) -> torch.Tensor:
    """Pad by `pad` and cut each image's HxW window at its own random offset (a shift); with
    `flip`, also mirror each crop left-right with probability 0.5.

    Offsets, flips and (for natural images) the reflection at the border all become one flat
    source index per output pixel, so the batch costs a single gather: about 3x faster than
    padding, gathering rows, then columns, then flipping.
    """
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=g, device=x.device)
    k = torch.arange(w, device=x.device)
    cols = k.expand(n, w)
    if flip:
        mirrored = torch.rand(n, generator=g, device=x.device) < 0.5
        cols = torch.where(mirrored[:, None], w - 1 - k, k)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (n, h), padded coordinates
    cols = offsets[1, :, None] + cols  # (n, w)
    if kind == "natural":
        source, width = x, w
        rows, cols = _reflect(rows - pad, h), _reflect(cols - pad, w)
    else:
        source, width = _pad(x, pad, kind), w + 2 * pad
    flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return source.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)


def cutout(x: torch.Tensor, size: int, kind: str, g: torch.Generator) -> torch.Tensor:
    """Blank one size x size square per image, centred uniformly, clipped at the border."""
    n, _, h, w = x.shape
    centre = torch.rand(2, n, generator=g, device=x.device)
    top = (centre[0] * h).long() - size // 2
    left = (centre[1] * w).long() - size // 2
    r = torch.arange(h, device=x.device)[None, :]
    k = torch.arange(w, device=x.device)[None, :]
    in_rows = (r >= top[:, None]) & (r < top[:, None] + size)  # (n, h)
    in_cols = (k >= left[:, None]) & (k < left[:, None] + size)  # (n, w)
    keep = ~(in_rows[:, None, :, None] & in_cols[:, None, None, :])
    # Arithmetic blending: several times faster than torch.where with a broadcast mask on CPU.
    if kind == "digit":
        background = x.amin(dim=(1, 2, 3), keepdim=True)
        return x * keep + background * ~keep  # x * 1 + 0 is exactly x, unlike bg + (x - bg)
    return x * keep


@dataclass(frozen=True)
class BatchAugment:
    """A named policy applied to a (N, C, H, W) batch with a generator on the batch's device."""

    name: str
    image_kind: str

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h = x.shape[-2]
        if self.image_kind == "natural":
            x = random_crop(x, max(1, round(4 * h / 32)), "natural", g, flip=True)
        else:
            x = random_crop(x, max(1, round(h / 14)), "digit", g)
        if self.name == "strong":
            size = max(1, h // 2 if self.image_kind == "natural" else h // 4)
            x = cutout(x, size, self.image_kind, g)
        return x


def make_augment(name: str, image_kind: str | None) -> Augment | None:
    """The batch augmentation `name` for images of `image_kind` ("digit" or "natural").

    Returns None for "none" and for text (image_kind None); raises ValueError for an unknown
    name or image kind.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {list(AUGMENTATIONS)}")
    if image_kind is not None and image_kind not in IMAGE_KINDS:
        raise ValueError(
            f"unknown image_kind {image_kind!r}; choose one of {list(IMAGE_KINDS)} (None: text)"
        )
    if name == "none" or image_kind is None:
        return None
    return BatchAugment(name, image_kind)
