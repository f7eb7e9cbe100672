"""Hugging Face transformers models nobody here wrote (examples/hf_models.py), quantised, trained,
swept, reported and packed by bitsweep."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

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


def _tiny_spec(tmp_path: Path) -> Path:
    """sweeps/hf.yaml as it is (models, data, resolutions, keep_fp32 axis), at CI size: one seed,
    two epochs, small data and a smaller GPT-2, three of its five resolutions."""
    raw = yaml.safe_load((ROOT / "sweeps" / "hf.yaml").read_text())
    raw.update(study="hf-tiny", workers=1, wandb={"mode": "disabled"})
    for grid in raw["grid"]:
        assert grid["precision"] == ["fp32", 1, 1.58, 2.32, 4], grid
        assert grid["keep_fp32"] == ["none", "ends"], grid
        grid.update(precision=["fp32", 1, 2.32], seed=[0], epochs=[2])
        if grid["model"] == ["examples.hf_models:gpt2"]:
            grid.update(subset=[48], block_size=[32],
                        model_args=[{"n_embd": 16, "n_layer": 1, "n_head": 2}])
        else:
            grid.update(subset=[30])
    path = tmp_path / "hf-tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_the_hf_sweep_runs_reports_and_every_packed_model_unpacks(tmp_path, monkeypatch, capsys) -> None:
    from suite.cli import main as bitsweep

    monkeypatch.chdir(ROOT)  # where the import strings are found, as the sweep file says
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec, runs, out = _tiny_spec(tmp_path), tmp_path / "runs", tmp_path / "reports"
    assert bitsweep(["sweep", str(spec), "--runs", str(runs)]) == 0
    assert bitsweep(["report", str(spec), "--runs", str(runs), "--out", str(out),
                     "--formats", "png"]) == 0
    report = out / "hf-tiny"
    results = pd.read_csv(report / "results.csv")
    assert len(results) == 12 and set(results["state"]) == {"COMPLETE"}
    assert set(results["keep_fp32"]) == {"none", "ends"}
    assert (report / "report.md").is_file() and (report / "tables" / "claims.csv").is_file()
    assert list((report / "figures").glob("accuracy_vs_bits*.png"))

    trials = sorted((runs / "hf-tiny" / "trials").iterdir())
    assert len(trials) == 12
    capsys.readouterr()
    for run in trials:
        config = json.loads((run / "config.json").read_text())
        assert bitsweep(["unpack", str(run / "model.bsw")]) == 0
        row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert row["loads"] and row["max_abs_logit_diff"] is not None, run
        assert row["max_abs_logit_diff"] <= 1e-4, (run, row["max_abs_logit_diff"])
        if config["precision"] == "fp32":
            assert row["params_quantized"] == 0
            continue
        n = {"1": 2, "2.32": 5}[str(config["precision"])]
        assert row["elements_per_level"] == {str(n): row["params_quantized"]} and row["params_quantized"] > 0
        assert row["bits_per_weight"] <= 1.01 * math.log2(n), (run, row)
