"""Hugging Face transformers models nobody here wrote (examples/hf_models.py), quantised, trained,
swept, reported and packed by bitsweep."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")  # the hf extra (nox's tests session installs it)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # examples/ is found from the repository root, as bitsweep finds it

from examples import hf_models  # noqa: E402
from suite.pack.format import packed_to_model, read_packed, save_packed  # noqa: E402
from suite.pack.weights import save_weights  # noqa: E402
from suite.quant import QuantMixin, quantize_  # noqa: E402


def _gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    return hf_models.gpt2((16,), 50, n_embd=32, n_layer=2, n_head=2).eval()


def _tokens() -> torch.Tensor:
    return torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantised_gpt2_packs_and_unpacks_to_the_same_logits(tmp_path, per_channel) -> None:
    model = _gpt2()
    summary = quantize_(model, "1.58", per_channel=per_channel)
    # every Conv1D projection, both embeddings and the tied LM head are on the grid
    assert summary.resolutions["transformer.h.0.attn.c_attn"] == "1.58"
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        logits = model(_tokens()).logits
    stats = save_packed(model, tmp_path / "gpt2.bsw", {})
    assert stats.bits_per_weight <= 1.01 * math.log2(3)

    def build(meta: dict) -> torch.nn.Module:
        fresh = _gpt2()
        quantize_(fresh, "1.58", per_channel=per_channel)
        return fresh

    rebuilt = packed_to_model(read_packed(tmp_path / "gpt2.bsw"), build)
    with torch.no_grad():
        assert torch.allclose(rebuilt(_tokens()).logits, logits, atol=1e-5)


def test_tied_weights_are_saved_as_safetensors_and_load_back_tied(tmp_path) -> None:
    from safetensors.torch import load_file

    model = _gpt2()
    save_weights(model.state_dict(), tmp_path / "w.safetensors")
    fresh = hf_models.gpt2((16,), 50, n_embd=32, n_layer=2, n_head=2).eval()
    fresh.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    with torch.no_grad():
        assert torch.equal(fresh(_tokens()).logits, model(_tokens()).logits)


@pytest.mark.parametrize("factory, shape", [(hf_models.resnet, (1, 8, 8)), (hf_models.vit, (1, 8, 8))])
def test_image_classifiers_take_the_factory_contract(factory, shape) -> None:
    model = factory(input_shape=shape, num_classes=10, width=2.0, unused_arg=1)
    assert model(torch.randn(2, *shape)).logits.shape == (2, 10)
    summary = quantize_(model, "2", keep_fp32="ends")
    names = list(summary.resolutions)
    assert summary.resolutions[names[0]] == summary.resolutions[names[-1]] == "fp32"
    assert {summary.resolutions[n] for n in names[1:-1]} == {"2"}
    assert sum(isinstance(m, QuantMixin) for m in model.modules()) == len(names)
