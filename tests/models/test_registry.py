"""Registry API, parameter counts of the paper presets, the width knob and spec round trips."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import FAMILIES, qconfig, tiny

from suite.models import MODELS, build_model, model_from_spec, model_spec, model_task
from suite.quant import QuantConfig

FOOD101 = {"input_shape": (3, 256, 256), "num_classes": 101}
WIKITEXT = {"input_shape": (256,), "num_classes": 30522}


def count(name: str, resolution: str, **kw: object) -> int:
    with torch.device("meta"):  # shapes only: the 333M-parameter LM allocates nothing
        model = build_model(name, qconfig=QuantConfig(resolution), **kw)
    return sum(p.numel() for p in model.parameters())


def test_names_and_tasks() -> None:
    assert isinstance(MODELS, tuple) and list(MODELS) == sorted(MODELS)
    assert set(MODELS) == {"fc", "cnn", "vit", "lm", "cnn-paper1-3x3", "cnn-paper1-5x5",
                           "lm-paper1-small", "lm-paper1-large"}
    assert {n for n in MODELS if model_task(n) == "text"} == {
        "lm", "lm-paper1-small", "lm-paper1-large"}
    assert all(model_task(n) == "image" for n in MODELS if not n.startswith("lm"))


@pytest.mark.parametrize(("name", "params"), [("cnn-paper1-3x3", 5_132_165),
                                              ("cnn-paper1-5x5", 13_505_925)])
def test_paper1_cnn_parameter_counts(name: str, params: int) -> None:
    assert count(name, "bnn", **FOOD101) == params
    assert count(name, "fp32", norm="none", **FOOD101) == params
    # The default at fp32 adds BatchNorm (and drops the conv biases it makes redundant).
    assert count(name, "fp32", **FOOD101) > params


@pytest.mark.parametrize(("name", "params"), [("lm-paper1-small", 154_406_714),
                                              ("lm-paper1-large", 332_855_098)])
def test_paper1_lm_parameter_counts(name: str, params: int) -> None:
    assert count(name, "bnn", **WIKITEXT) == params


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
@pytest.mark.parametrize("name", FAMILIES)
def test_width_spans_ten_times_the_parameters(name: str, shape: tuple[int, ...]) -> None:
    kw = {"input_shape": (64,), "num_classes": 96} if name == "lm" else {
        "input_shape": shape, "num_classes": 10}
    small, large = count(name, "2.32", width=0.5, **kw), count(name, "2.32", width=4, **kw)
    assert large >= 10 * small


def test_depth_changes_the_number_of_layers() -> None:
    def n(name: str, depth: int) -> int:
        return sum(p.numel() for p in tiny(name, depth=depth).parameters())

    for name in FAMILIES:
        assert n(name, 3) > n(name, 1), name


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(ValueError, match="resnet") as err:
        build_model("resnet", qconfig=QuantConfig(), input_shape=(1, 8, 8), num_classes=10)
    assert all(name in str(err.value) for name in MODELS)
    with pytest.raises(ValueError, match="resnet"):
        model_task("resnet")


@pytest.mark.parametrize("width", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_bad_width_is_rejected(width: object) -> None:
    with pytest.raises(ValueError, match="width"):
        tiny("cnn", width=width)


@pytest.mark.parametrize(("name", "kw", "match"), [
    ("cnn", {"norm": "layer"}, "norm"),
    ("vit", {"norm": "batch"}, "norm"),
    ("fc", {"depth": 0}, "depth"),
    ("lm", {"depth": 2.0}, "depth"),
])
def test_bad_options_are_rejected(name: str, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny(name, **kw)


def test_bad_input_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        build_model("cnn", qconfig=QuantConfig(), input_shape=(8, 8), num_classes=10)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("lm", qconfig=QuantConfig(), input_shape=(1, 8, 8), num_classes=10)


CASES = [
    ("fc", dict(input_shape=(1, 8, 8), num_classes=10, width=0.5, depth=3, norm="batch")),
    ("cnn", dict(input_shape=(3, 32, 32), num_classes=10, width=1.5)),
    ("vit", dict(input_shape=(1, 28, 28), num_classes=10, depth=1, norm="post")),
    ("lm", dict(input_shape=(16,), num_classes=30, width=0.7)),
    ("cnn-paper1-5x5", FOOD101),
    ("lm-paper1-small", WIKITEXT),
]


@pytest.mark.parametrize("resolution", ["fp32", "N=7", "bnn"])
@pytest.mark.parametrize(("name", "kw"), CASES)
def test_spec_round_trip_rebuilds_the_architecture(name: str, kw: dict, resolution: str) -> None:
    qc = qconfig(resolution, scale_rule="lsq") if resolution == "N=7" else qconfig(resolution)
    spec = json.loads(json.dumps(model_spec(name, qconfig=qc, **kw)))
    with torch.device("meta"):
        original = build_model(name, qconfig=qc, **kw)
        rebuilt = model_from_spec(spec)
    assert rebuilt.cfg == original.cfg
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in original.state_dict().items()}
    assert model_spec(name, qconfig=rebuilt_qconfig(rebuilt), **kw) == spec


def rebuilt_qconfig(model: torch.nn.Module) -> QuantConfig:
    from suite.quant import QuantMixin

    return next(m.qconfig for m in model.modules() if isinstance(m, QuantMixin))


def test_spec_that_no_longer_matches_the_code_is_refused() -> None:
    spec = model_spec("cnn", qconfig=QuantConfig(), input_shape=(1, 8, 8), num_classes=10)
    spec["arch"]["channels"] = [1, 2, 3]
    with pytest.raises(ValueError, match="no longer matches"):
        model_from_spec(spec)


USER_MODULE = '''
from torch import nn


def mlp(input_shape, num_classes, width=1.0, hidden=8, **kwargs):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, round(hidden * width)), nn.ReLU(),
                         nn.Linear(round(hidden * width), num_classes))
'''


@pytest.fixture
def user_spec(tmp_path, monkeypatch) -> dict:
    import uuid

    from suite.models.registry import qconfig_to_dict
    from suite.models.user import user_spec as make_spec

    name = f"user_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return make_spec(f"{name}:mlp", qconfig=qconfig_to_dict(QuantConfig("1.58")),
                     input_shape=(1, 4, 4), num_classes=3, width=2.0,
                     model_args={"hidden": 5}, task="image", layers=["3=fp32"])


def test_a_user_spec_rebuilds_its_model_quantised_as_recorded(user_spec) -> None:
    from suite.quant import QuantMixin

    spec = json.loads(json.dumps(user_spec))  # as model.json stores it
    model = model_from_spec(spec)
    first, last = model[1], model[3]
    assert isinstance(first, QuantMixin) and isinstance(last, QuantMixin)
    assert first.weight.shape == (10, 16)  # hidden * width from the recorded arguments
    assert first.qconfig.resolution.label == "1.58" and last.qconfig.resolution.label == "fp32"
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)


def test_a_user_model_that_cannot_train_in_memory_is_refused(user_spec) -> None:
    from suite.models.registry import ModelTooLarge, check_fits

    model = model_from_spec(user_spec)
    params = sum(p.numel() for p in model.parameters())
    check_fits(user_spec, params * 16, model=model)  # exactly enough: weights, grads, Adam
    with pytest.raises(ModelTooLarge, match=r"width=2\.0: model 'user_models_\w+:mlp' would have"):
        check_fits(user_spec, params * 16 - 1, model=model)
    check_fits(user_spec, 1)  # not built yet: a user factory is not run on the meta device
