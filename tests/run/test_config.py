"""RunConfig: every bad value fails on construction with a message naming the field."""

from __future__ import annotations

import math
import re

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


def test_a_user_model_and_dataset_are_named_by_import_strings_without_importing_them() -> None:
    import sys

    config = RunConfig(model="not_imported_pkg.models:make", model_args={"depth": 3, "act": "gelu"},
                       dataset="not_imported_pkg.data:load", dataset_args={"n": 10})
    assert "not_imported_pkg" not in sys.modules  # validation checks the form only
    assert config.task is None and config.norm == "auto"
    assert RunConfig.from_dict(config.to_dict()) == config
    assert hash(config) == hash(RunConfig.from_dict(config.to_dict()))  # dict fields: no hash


def test_model_args_change_the_fingerprint_but_their_default_does_not() -> None:
    base = RunConfig(model="pkg.m:make")
    assert "model_args" not in base.to_file_dict() and "dataset_args" not in base.to_file_dict()
    with_args = base.replace(model_args={"hidden": 8})
    assert with_args.fingerprint() != base.fingerprint()
    assert with_args.fingerprint() == base.replace(model_args={"hidden": 8}).fingerprint()
    assert with_args.group() != base.group()


@pytest.mark.parametrize(("changes", "says"), [
    ({"model": "pkg.models.make"}, "model='pkg.models.make': unknown model"),
    ({"model": "pkg:make", "model_args": {"num_classes": 3}}, "model_args="),
    ({"model": "pkg:make", "model_args": ["hidden"]}, "model_args=['hidden']: must be a mapping"),
    ({"model": "pkg:make", "model_args": {"f": float("nan")}}, "JSON data"),
    ({"model": "pkg:make", "depth": 3}, "depth=3: a user model takes its own arguments"),
    ({"model": "pkg:make", "norm": "batch"}, "norm='batch': choose one of auto"),
    ({"model": "cnn", "model_args": {"hidden": 3}}, "model 'cnn' is built in"),
    ({"dataset": "digits", "dataset_args": {"n": 3}}, "dataset 'digits' is built in"),
    ({"dataset": "pkg:load", "image_size": 32}, "image_size=32 applies to the built-in datasets"),
])
def test_bad_user_fields_name_the_field(changes, says) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        RunConfig(**changes)


def test_registered_names_are_choices_in_this_process() -> None:
    from suite.data.names import _USER as DATA_USER
    from suite.data.names import register_dataset
    from suite.models.names import _USER as MODEL_USER
    from suite.models.names import register_model
    from suite.run.config import field_choices

    def factory(**kwargs):  # never called: validation does not build
        raise AssertionError

    register_model("test-text-net", factory, task="text")
    register_dataset("test-images", factory, task="image")
    try:
        assert "test-text-net" in field_choices("model")
        assert "test-images" in field_choices("dataset")
        assert RunConfig(model="test-text-net", dataset="stdlib-text").task == "text"
        with pytest.raises(ConfigError, match="model 'test-text-net' needs a text corpus"):
            RunConfig(model="test-text-net", dataset="test-images")
        with pytest.raises(ValueError, match="already registered"):
            register_model("test-text-net", lambda **kw: None)
        with pytest.raises(ValueError, match="built-in"):
            register_model("cnn", factory)
    finally:
        MODEL_USER.pop("test-text-net", None)
        DATA_USER.pop("test-images", None)
