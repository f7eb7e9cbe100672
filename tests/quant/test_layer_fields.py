"""RunConfig.layers and RunConfig.keep_fp32: validated without torch, left out of old
fingerprints at their defaults, and honoured by the built-in families through their spec."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from suite.models import model_from_spec, model_spec
from suite.quant import QuantConfig, QuantMixin, param_summary
from suite.run.config import ConfigError, RunConfig


def test_fields_normalise_and_validate_without_torch() -> None:
    code = (
        "import sys\n"
        "from suite.run.config import RunConfig, ConfigError\n"
        "c = RunConfig(layers=[{'head.*': 'fp32'}, 'net.1=2.32', ['re:x\\\\.[0-9]', 'N=7']],"
        " keep_fp32='ends')\n"
        "assert c.layers == ('head.*=fp32', 'net.1=2.32', 're:x\\\\.[0-9]=N=7'), c.layers\n"
        "for bad in ({'layers': ['head']}, {'layers': ['head=7bits']}, {'keep_fp32': 'middle'}):\n"
        "    try:\n"
        "        RunConfig(**bad)\n"
        "    except ConfigError as err:\n"
        "        assert str(err).startswith(next(iter(bad)) + '='), err\n"
        "    else:\n"
        "        raise AssertionError(bad)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_keep_fingerprints_and_set_values_change_them() -> None:
    base = RunConfig()
    assert RunConfig(layers=[], keep_fp32="none").fingerprint() == base.fingerprint()
    assert "layers" not in base.to_file_dict() and "keep_fp32" not in base.to_file_dict()
    assert RunConfig(keep_fp32="ends").fingerprint() != base.fingerprint()
    assert RunConfig(layers=["head=fp32"]).fingerprint() != base.fingerprint()
    # dict and string spellings are one experiment
    assert RunConfig(layers=[{"head": "fp32"}]).fingerprint() == \
        RunConfig(layers="head=fp32").fingerprint()
    again = RunConfig.from_dict(RunConfig(layers=["a=1"], keep_fp32="last").to_file_dict())
    assert (again.layers, again.keep_fp32) == (("a=1",), "last")
    with pytest.raises(ConfigError, match="layers="):
        RunConfig(layers=[{"a=b": "1"}])


def _spec(**policy):
    return model_spec("cnn", qconfig=QuantConfig(resolution="1.58", scale_rule="lsq"),
                      input_shape=(1, 8, 8), num_classes=10, width=0.5, **policy)


def test_a_family_spec_without_rules_is_unchanged_and_builds_the_same_model() -> None:
    spec = _spec()
    assert "layers" not in spec and "keep_fp32" not in spec
    assert _spec(layers=[], keep_fp32="none") == spec
    torch.manual_seed(0)
    a = model_from_spec(spec)
    torch.manual_seed(0)
    b = model_from_spec({**spec, "layers": [], "keep_fp32": "none"})
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(a(x), b(x))


def test_built_in_family_honours_keep_fp32_and_layer_rules() -> None:
    spec = _spec(keep_fp32="ends", layers=["head.2=2"])
    assert spec["keep_fp32"] == "ends" and spec["layers"] == ["head.2=2"]
    model = model_from_spec(spec)
    quant = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantMixin)]
    labels = {n: m.qconfig.resolution.label for n, m in quant}
    first, last = quant[0][0], quant[-1][0]
    assert (first, last) == ("features.0", "head.4")
    assert labels[first] == labels[last] == "fp32"
    assert labels["head.2"] == "2"
    assert all(v == "1.58" for n, v in labels.items() if n not in (first, last, "head.2"))
    assert model.features[0].step is None and model.head[2].step is not None  # lsq at 2 bits
    # the accounting counts the fp32 layers at 32 bits
    plain = model_from_spec(_spec())
    s, p = param_summary(model), param_summary(plain)
    kept = sum(m.weight.numel() for m in (model.features[0], model.head[4]))
    assert p.params_quantized - s.params_quantized == kept
    # the rules travel in the spec: a rebuild is the same model
    again = model_from_spec(spec)
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(again(x), model(x))


def test_results_get_a_column_each_and_keep_fp32_is_a_report_axis() -> None:
    from suite.report.frame import frames_from_records, setting_axes

    records = []
    for i, (policy, seed) in enumerate([(p, s) for p in ("none", "ends") for s in (0, 1)]):
        config = RunConfig(precision="2", keep_fp32=policy, seed=seed, epochs=1)
        # a run directory's config.json leaves defaults out: the first run's holds no keep_fp32
        stored = config.to_file_dict() if i == 0 else config.to_dict()
        records.append({"run_id": f"r{i}", "state": "COMPLETE", "config": stored,
                        "result": {"val_acc": 0.5 + 0.1 * i, "test_acc": 0.5, "diverged": False,
                                   "layer_table": [{"name": "head", "params": 10}]}})
    frames = frames_from_records(records)
    assert list(frames.results.sort_values("run_id")["keep_fp32"]) == ["none", "none", "ends", "ends"]
    assert set(frames.results["layers"]) == {"[]"}
    assert "layer_table" not in frames.results  # result.json's, too large for a cell
    assert "keep_fp32" in setting_axes(frames)
    assert "layers" not in setting_axes(frames)  # one value: not an axis


def test_a_trained_run_records_the_per_layer_table_and_packs_at_each_layers_bits(
        tmp_path, monkeypatch, capsys) -> None:
    """One real `bitsweep train` (fc on digits, 1 epoch) with keep_fp32=last and a rule; its
    result.json's table, model.json's rules, and `bitsweep pack`/`unpack` from the run alone."""
    import json

    from suite.cli import main

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    code = main(["train", "--model", "fc", "--dataset", "digits", "--precision", "1.58",
                 "--epochs", "1", "--keep-fp32", "last", "--layers", "net.4=4",
                 "--wandb-mode", "disabled", "--out", str(run)])
    assert code == 0
    capsys.readouterr()
    result = json.loads((run / "result.json").read_text())
    assert (result["keep_fp32"], result["layers"]) == ("last", ["net.4=4"])
    table = {r["name"]: r for r in result["layer_table"]}
    # net.2 and net.5 are the LayerNorms between the Linear layers
    assert [table[n]["resolution"] for n in ("net.1", "net.2", "net.4", "net.7")] == \
        ["1.58", "fp32", "4", "fp32"]
    assert table["net.7"]["bits"] == 32.0 and table["net.4"]["type"] == "QuantLinear"
    assert sum(r["bytes"] for r in table.values()) == pytest.approx(result["quantized_bytes"])
    assert sum(r["params"] for r in table.values()) == result["params"]
    spec = json.loads((run / "model.json").read_text())
    assert (spec["keep_fp32"], spec["layers"]) == ("last", ["net.4=4"])

    assert main(["pack", str(run), "--out", str(tmp_path / "m.bsw")]) == 0
    packed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["name"]: r for r in packed["packed_layers"]}
    assert [rows[n]["resolution"] for n in ("net.1", "net.4", "net.7")] == ["1.58", "4", "fp32"]
    for name, n in (("net.1", 3), ("net.4", 16)):  # indices at log2 N; fp32 bias and one step
        out_features = 256
        weights = rows[name]["params"] - out_features
        assert rows[name]["bytes"] * 8 <= 1.01 * math.log2(n) * weights + 32 * (out_features + 1)
    assert rows["net.7"]["bits"] == 32.0
    assert main(["unpack", str(tmp_path / "m.bsw")]) == 0
