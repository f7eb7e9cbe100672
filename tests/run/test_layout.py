"""channels_last only where it was measured to win: the CNN family on colour images on CPU."""

from __future__ import annotations

import pytest
import torch

from suite.models import build_model
from suite.quant import QuantConfig
from suite.run.config import ConfigError, RunConfig
from suite.run.layout import MEMORY_FORMATS, use_channels_last

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


def model(name: str, shape: tuple[int, ...]) -> torch.nn.Module:
    return build_model(name, qconfig=QuantConfig(resolution="2.32"), input_shape=shape,
                       num_classes=10)


@pytest.mark.parametrize(("name", "shape", "device", "expected"), [
    ("cnn", (3, 32, 32), CPU, True),  # 0.70x of the default layout's fit time
    ("cnn-paper1-3x3", (3, 64, 64), CPU, True),
    ("cnn", (1, 28, 28), CPU, False),  # Fashion-MNIST: 1.04-1.10x, slower
    ("cnn", (1, 8, 8), CPU, False),  # digits: no difference
    ("vit", (3, 32, 32), CPU, False),  # not measured
    ("cnn", (3, 32, 32), GPU, False),  # not measured on a GPU yet
])
def test_auto_takes_channels_last_where_it_was_measured_faster(name, shape, device, expected):
    assert use_channels_last("auto", model(name, shape), shape, device) is expected


def test_a_forced_layout_holds_and_bad_values_are_refused():
    cnn = model("cnn", (1, 8, 8))
    assert use_channels_last("channels_last", cnn, (1, 8, 8), CPU) is True
    assert use_channels_last("contiguous", cnn, (3, 32, 32), CPU) is False
    with pytest.raises(ConfigError, match=r"memory_format='nhwc': choose one of auto, "
                                          r"channels_last, contiguous"):
        RunConfig(memory_format="nhwc")
    assert MEMORY_FORMATS == ("auto", "channels_last", "contiguous")
    with pytest.raises(ConfigError, match=r"memory_format='channels_last': .* a text model takes "
                                          r"token windows, use auto or contiguous"):
        RunConfig(model="lm", dataset="stdlib-text", memory_format="channels_last")
    RunConfig(model="lm", dataset="stdlib-text", memory_format="contiguous")  # a no-op, accepted


def test_the_layout_is_not_part_of_the_experiment():
    config = RunConfig()
    nhwc = config.replace(memory_format="channels_last")
    assert nhwc.fingerprint() == config.fingerprint()
    assert "memory_format" not in config.to_file_dict()
    assert nhwc.to_file_dict()["memory_format"] == "channels_last"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fc", "vit"])
def test_a_forced_channels_last_trains_models_without_convolutions_to_the_same_run(model, tmp_path):
    """fc and vit flatten or cut their input into patches: an NHWC batch holds the same values,
    so forcing the layout on them changes nothing."""
    from suite.run.train import train

    config = RunConfig(model=model, dataset="digits", subset=10, epochs=1, width=0.5,
                       device="cpu", wandb_mode="disabled")
    plain = train(config, tmp_path / "plain", progress=False)
    nhwc = train(config.replace(memory_format="channels_last"), tmp_path / "nhwc", progress=False)
    assert nhwc["memory_format"] == "channels_last" and plain["memory_format"] == "contiguous"
    for key in ("train_loss", "val_loss", "val_acc", "test_loss"):
        assert nhwc[key] == plain[key], key
