"""Batched augmentation: shapes kept, seeded, really changes images, correct per example."""

from __future__ import annotations

import pytest
import torch

from suite.data import load_dataset, make_augment
from suite.data.augment import AUGMENTATIONS, cutout, random_crop


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits_batch() -> torch.Tensor:
    return load_dataset("digits").train_x[:256]


@pytest.fixture(scope="module")
def natural_batch() -> torch.Tensor:
    return torch.randn(256, 3, 32, 32, generator=gen(0))


@pytest.mark.parametrize("name", ["standard", "strong"])
@pytest.mark.parametrize("kind", ["digit", "natural"])
def test_policy_keeps_shape_is_seeded_and_changes_images(name, kind, digits_batch, natural_batch):
    x = digits_batch if kind == "digit" else natural_batch
    augment = make_augment(name, kind)
    out = augment(x, gen(1))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.equal(out, augment(x, gen(1)))
    assert not torch.equal(out, augment(x, gen(2)))
    changed = (out != x).flatten(1).any(1).float().mean()
    assert changed > 0.5  # most images move (a zero offset and no flip leaves some as they were)


def test_none_and_text_give_no_augmentation():
    assert make_augment("none", "natural") is None
    for name in AUGMENTATIONS:
        assert make_augment(name, None) is None  # text: nothing to augment


def test_unknown_names_are_value_errors():
    with pytest.raises(ValueError, match="standard"):
        make_augment("heavy", "digit")
    with pytest.raises(ValueError, match="natural"):
        make_augment("standard", "photo")


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("kind", ["digit", "natural"])
def test_random_crop_matches_a_per_example_reference(kind, flip, natural_batch):
    x, pad = natural_batch[:16], 4
    out = random_crop(x, pad, kind, gen(5), flip=flip)
    g = gen(5)  # replay the same draws: offsets, then flips
    offsets = torch.randint(0, 2 * pad + 1, (2, 16), generator=g)
    mirrored = torch.rand(16, generator=g) < 0.5 if flip else torch.zeros(16, dtype=torch.bool)
    if kind == "natural":
        padded = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect")
    else:
        padded = torch.stack([torch.full((3, 40, 40), float(img.min())) for img in x])
        padded[:, :, pad:-pad, pad:-pad] = x
    for i in range(16):
        oy, ox = offsets[:, i].tolist()
        expected = padded[i, :, oy : oy + 32, ox : ox + 32]
        assert torch.equal(out[i], expected.flip(2) if mirrored[i] else expected)
    assert 0 < mirrored.sum() < 16 or not flip


def test_digit_shift_never_flips_and_stays_within_one_pixel(digits_batch):
    x = digits_batch
    out = make_augment("standard", "digit")(x, gen(3))
    bg = x.amin(dim=(1, 2, 3), keepdim=True).expand(-1, 1, 10, 10).clone()
    bg[:, :, 1:9, 1:9] = x
    shifts = [bg[:, :, dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)]
    matches = torch.stack([(out == s).flatten(1).all(1) for s in shifts])  # (9, N)
    assert matches.any(0).all()  # each output is one of the 9 shifts, never a mirror


def test_natural_standard_flips_about_half(natural_batch):
    x = natural_batch
    flip_only = make_augment("standard", "natural")
    out = flip_only(x, gen(4))
    # A flipped crop correlates with the flipped image better than with the original one.
    score_flip = (out * x.flip(3)).flatten(1).sum(1)
    score_same = (out * x).flatten(1).sum(1)
    assert 0.35 < (score_flip > score_same).float().mean() < 0.65


def test_cutout_blanks_one_clipped_square(natural_batch):
    x = natural_batch + 10  # no pixel equals the fill value 0 before cutout
    out = cutout(x, 16, "natural", gen(6))
    blanked = (out == 0).flatten(1).sum(1)
    assert blanked.max() == 16 * 16 * 3
    assert blanked.min() >= 8 * 8 * 3
    assert torch.equal(out[out != 0], x[out != 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_batch_device(natural_batch):
    x = natural_batch.cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    out = make_augment("strong", "natural")(x, g)
    assert out.device == x.device
    assert out.shape == x.shape
