"""RunConfig: every bad value fails on construction with a message naming the field."""

from __future__ import annotations

import math

import pytest

from suite.run.config import ConfigError, RunConfig, config_fields


def test_defaults_are_valid_and_round_trip() -> None:
    config = RunConfig()
    assert RunConfig.from_dict(config.to_dict()) == config
    assert set(config.to_dict()) == set(config_fields())


# zero is the zero-in/zero-out axis of level grids: fp32 has no grid and bnn is its own grid kind
@pytest.mark.parametrize(("given", "label", "levels", "bits", "zero", "grid"), [
    ("fp32", "fp32", None, 32.0, False, "fp32"),
    ("1", "1", 2, 1.0, False, "no zero"),
    ("2.32", "2.32", 5, math.log2(5), True, "zero"),
    ("N=5", "2.32", 5, math.log2(5), True, "zero"),
    (2.32, "2.32", 5, math.log2(5), True, "zero"),
    ("4.08", "4.09", 17, math.log2(17), True, "zero"),
    ("bnn", "bnn", 2, 1.0, False, "bnn"),
])
def test_precision_spellings_resolve_to_one_label(given, label, levels, bits, zero, grid) -> None:
    config = RunConfig(precision=given)
    assert config.precision == label
    assert config.resolution.levels == levels
    assert config.resolution.bits == pytest.approx(bits)
    assert config.resolution.zero is zero
    assert config.resolution.grid == grid


@pytest.mark.parametrize(("changes", "field"), [
    ({"precision": "0.5"}, "precision"),
    ({"precision": 0.5}, "precision"),
    ({"model": "resnet"}, "model"),
    ({"epochs": -1}, "epochs"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": 1.5}, "epochs"),
    ({"epochs": None}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"lr": 0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"lr": "fast"}, "lr"),
    ({"width": -1.0}, "width"),
    ({"batch_size": 0}, "batch_size"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"dataset": "stdlib-text"}, "dataset"),  # cnn on text
    ({"model": "lm", "dataset": "digits"}, "dataset"),
    ({"model": "lm", "dataset": "stdlib-text", "augment": "standard"}, "augment"),
    ({"augment": "heavy"}, "augment"),
    ({"optimizer": "lamb"}, "optimizer"),
    ({"schedule": "step"}, "schedule"),
    ({"scale_rule": "minmax"}, "scale_rule"),
    ({"norm": "layer"}, "norm"),  # the cnn has batch or none
    ({"model": "lm", "dataset": "stdlib-text", "norm": "batch"}, "norm"),
    ({"device": "tpu"}, "device"),
    ({"device": 0}, "device"),
    ({"wandb_mode": "cloud"}, "wandb_mode"),
    ({"warmup_epochs": 5.0, "epochs": 5}, "warmup_epochs"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"grad_clip": 0.0}, "grad_clip"),
    ({"subset": 0}, "subset"),
    ({"quantize_bias": "yes"}, "quantize_bias"),
    ({"tags": "a,b"}, "tags"),
    ({"tags": [1, 2]}, "tags"),
])
def test_bad_values_name_the_field(changes, field) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}="):
        RunConfig(**changes)


@pytest.mark.parametrize(("model", "norm"), [("fc", "layer"), ("cnn", "batch"), ("vit", "post"),
                                             ("lm", "pre")])
def test_each_family_accepts_its_own_norms(model, norm) -> None:
    dataset = "stdlib-text" if model == "lm" else "digits"
    assert RunConfig(model=model, dataset=dataset, norm=norm).norm == norm


def test_integral_floats_become_ints() -> None:
    config = RunConfig(epochs=3.0, seed=2.0)
    assert config.epochs == 3 and isinstance(config.epochs, int)
    assert config.seed == 2 and isinstance(config.seed, int)


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="epoch"):
        RunConfig.from_dict({"epoch": 3})


def test_group_leaves_out_only_the_seed_and_bookkeeping() -> None:
    base = RunConfig(precision="2.32", epochs=3)
    assert base.replace(seed=7).group() == base.group()
    assert base.replace(wandb_mode="disabled", threads=1, tags=("x",)).group() == base.group()
    for change in ({"scale_rule": "absmean"}, {"batch_size": 64}, {"optimizer": "sgd"},
                   {"precision": "1"}, {"augment": "standard"}, {"weight_decay": 0.1}):
        assert base.replace(**change).group() != base.group(), change
    assert base.replace(wandb_group="mine").group() == "mine"
