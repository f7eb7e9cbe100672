"""`bitsweep pack` / `bitsweep unpack` on run directories (the format itself: tests/quant/test_pack.py).

Run directories are written the way suite.run.train writes them (config.json, model.json,
model.safetensors) from models trained a few optimizer steps on random data, so no test here
pays for Lightning except the one that checks a real `bitsweep train` run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from suite.cli import main
from suite.models import model_spec
from suite.pack.format import save_packed
from suite.pack.rundir import example_input, load_packed_model
from suite.quant import QuantMixin
from suite.run.config import RunConfig
from suite.run.train import load_trained, quant_config

IMAGE = ((1, 8, 8), 10)  # digits
TEXT_LEN, VOCAB = 16, 40
LOGIT_TOL = 1e-5


def make_run(root: Path, model: str, precision: str, *, shape: tuple[int, ...] | None = None,
             steps: int = 4, **fields: object) -> Path:
    """A run directory as suite.run.train leaves it, for a model trained ``steps`` Adam steps."""
    text = model == "lm"
    dataset = "stdlib-text" if text else ("fashion-mnist" if shape == (1, 28, 28) else "digits")
    config = RunConfig(model=model, precision=precision, dataset=dataset, epochs=1,
                       block_size=TEXT_LEN, **fields)
    input_shape, classes = ((TEXT_LEN,), VOCAB) if text else (shape or IMAGE[0], IMAGE[1])
    spec = model_spec(model, qconfig=quant_config(config), input_shape=input_shape,
                      num_classes=classes, width=config.width, depth=config.depth,
                      norm=config.norm)
    from suite.models import model_from_spec

    torch.manual_seed(0)
    net = model_from_spec(spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(steps):  # move weights off their init, fill BatchNorm running stats
        x = example_input(spec, batch=8, seed=step)
        logits = net(x)
        target = torch.randint(0, classes, logits.shape[:-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, classes), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    run = root / f"{model}-{precision}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config.to_file_dict(), indent=1))
    (run / "model.json").write_text(json.dumps(spec, indent=1))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(run / "model.safetensors"))
    return run


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict | None, str]:
    """Run `bitsweep ARGV` in-process: (exit code, the JSON line or None, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 else None, err


FAMILIES = ("fc", "cnn", "vit", "lm")
RESOLUTIONS = ("fp32", "1", "1.58", "2.32", "4.09", "bnn")


@pytest.mark.parametrize("precision", RESOLUTIONS)
@pytest.mark.parametrize("model", FAMILIES)
def test_pack_then_unpack_predicts_like_the_fake_quantised_model(tmp_path, capsys, model,
                                                                 precision):
    run = make_run(tmp_path, model, precision, width=0.5)
    code, packed, _ = cli(capsys, "pack", str(run))
    assert code == 0
    assert packed["file"] == str(run / "model.bsw") and (run / "model.bsw").is_file()
    assert packed["file_bytes"] == (run / "model.bsw").stat().st_size
    assert packed["fp32_file_bytes"] == (run / "model.safetensors").stat().st_size
    reference = load_trained(run)
    n_quant = sum(m.weight.numel() + (m.bias.numel() if m.qconfig.bias_quantized else 0)
                  for m in reference.modules()
                  if isinstance(m, QuantMixin) and m.qconfig.resolution.quantized)
    assert packed["params_quantized"] == n_quant
    if precision == "fp32":
        assert n_quant == 0 and packed["elements_per_level"] == {} and packed["bits_per_weight"] == 32.0
    else:
        key = "bnn" if precision == "bnn" else str(_levels(reference))
        assert packed["elements_per_level"] == {key: n_quant} and n_quant > 0

    deq = tmp_path / "deq.safetensors"
    code, unpacked, _ = cli(capsys, "unpack", packed["file"], "--out", str(deq))
    assert code == 0
    assert unpacked["loads"] is True
    assert unpacked["max_abs_logit_diff"] <= LOGIT_TOL  # checked against the run's own model
    assert unpacked["file_bytes"] == packed["file_bytes"]

    # The Python API: the same predictions on fresh inputs.
    rebuilt = load_packed_model(packed["file"])
    assert not rebuilt.training
    spec = json.loads((run / "model.json").read_text())
    x = example_input(spec, batch=6, seed=123)
    with torch.no_grad():
        want, got = reference(x), rebuilt(x)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= LOGIT_TOL  # (assert_close costs a 2 s import)
    if model != "lm":
        assert torch.equal(got.argmax(-1), want.argmax(-1))

    # The dequantised safetensors hold the grid values: at most N distinct values per tensor.
    weights = load_file(str(deq))
    assert set(weights) == set(reference.state_dict())
    for name, module in rebuilt.named_modules():
        if isinstance(module, QuantMixin) and module.qconfig.resolution.quantized:
            w = weights[f"{name}.weight"]
            assert torch.unique(w).numel() <= module.qconfig.resolution.levels, name
            assert torch.equal(w, module.weight.detach()), name


def _levels(model: torch.nn.Module) -> int:
    return next(m.qconfig.resolution.levels for m in model.modules() if isinstance(m, QuantMixin))


@pytest.mark.parametrize(("model", "fields"), [
    ("cnn", {"scale_rule": "lsq", "per_channel": True}),  # learned, per-channel grid steps
    ("fc", {"quantize_bias": True, "norm": "batch"}),
    ("vit", {"scale_rule": "absmax", "depth": 1}),
])
def test_scale_rules_and_options_survive_the_round_trip(tmp_path, capsys, model, fields):
    run = make_run(tmp_path, model, "2.32", width=0.5, **fields)
    assert cli(capsys, "pack", str(run))[0] == 0
    code, unpacked, _ = cli(capsys, "unpack", str(run))  # a run directory means its model.bsw
    assert code == 0
    assert unpacked["max_abs_logit_diff"] <= LOGIT_TOL


LABELS = {"1": 2, "1.58": 3, "2": 4, "2.32": 5, "3": 8, "3.17": 9, "4": 16, "4.09": 17}


@pytest.mark.parametrize(("label", "n"), LABELS.items())
def test_packed_bits_per_weight_within_one_percent_of_log2n(tmp_path, capsys, label, n):
    run = make_run(tmp_path, "cnn", label, steps=1, width=0.5)
    code, packed, _ = cli(capsys, "pack", str(run), "--out", str(tmp_path / "out" / "m.bsw"))
    assert code == 0
    assert packed["elements_per_level"] == {str(n): packed["params_quantized"]}
    assert packed["bits_per_weight"] <= 1.01 * math.log2(n)
    assert packed["entropy_bits_per_weight"] <= math.log2(n) + 1e-9
    # Index streams at ~log2 N bits; the rest of the file is scales, fp32 tensors and the header.
    assert packed["index_bytes"] * 8 == pytest.approx(
        packed["bits_per_weight"] * packed["params_quantized"])
    assert packed["file_bytes"] == (packed["index_bytes"] + packed["scale_bytes"]
                                    + packed["other_bytes"] + packed["header_bytes"])


@pytest.mark.parametrize(("precision", "fields"), [
    ("bnn", {}),  # paper 1: every parameter, bias included, is 0 or 1
    ("1", {"quantize_bias": True, "norm": "none"}),  # N=2 with nothing left at fp32
])
def test_one_bit_fc_file_is_30x_smaller_than_its_fp32_file(tmp_path, capsys, precision, fields):
    run = make_run(tmp_path, "fc", precision, shape=(1, 28, 28), steps=1, **fields)
    code, packed, _ = cli(capsys, "pack", str(run))
    assert code == 0
    fp32_file = (run / "model.safetensors").stat().st_size
    packed_file = (run / "model.bsw").stat().st_size
    assert fp32_file / packed_file >= 30, (fp32_file, packed_file)
    assert packed["compression_vs_fp32_file"] == pytest.approx(fp32_file / packed_file)
    assert packed["bits_per_weight"] <= 1.01  # byte padding of the small bias tensors


# --------------------------------------------------------------------------- bad input: exit 2


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("good"), "cnn", "2.32", steps=1, width=0.5)
    assert main(["pack", str(run)]) == 0
    return run / "model.bsw"


def _damaged(good: Path, tmp_path: Path, how: str) -> Path:
    data = bytearray(good.read_bytes())
    header_len = int.from_bytes(data[6:10], "little")
    if how.startswith("cut"):
        data = data[: {"cut-preamble": 7, "cut-header": 14 + header_len // 2,
                       "cut-payload": len(data) // 2 + header_len // 2,
                       "cut-last-byte": len(data) - 1}[how]]
    elif how == "flip-header":
        data[14 + header_len // 2] ^= 0x20
    elif how == "flip-payload":
        data[-10] ^= 0x01
    elif how == "not-packed":
        data = bytearray(b"\x00" * 64)
    path = tmp_path / f"{how}.bsw"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("how", "message"), [
    ("cut-preamble", "truncated"), ("cut-header", "truncated"), ("cut-payload", "truncated"),
    ("cut-last-byte", "truncated"), ("flip-header", "header checksum mismatch"),
    ("flip-payload", "payload checksum mismatch"), ("not-packed", "bad magic"),
])
def test_damaged_file_is_refused_with_exit_2(good_file, tmp_path, capsys, how, message):
    path = _damaged(good_file, tmp_path, how)
    code, _, err = cli(capsys, "unpack", str(path), "--out", str(tmp_path / "deq.safetensors"))
    assert code == 2
    assert err.startswith(f"bitsweep unpack: error: {path}: not a usable bitsweep packed file")
    assert message in err
    assert not (tmp_path / "deq.safetensors").exists()  # nothing written


def test_bad_run_directories_are_refused_with_exit_2(tmp_path, capsys):
    code, _, err = cli(capsys, "pack", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in err
    run = make_run(tmp_path, "fc", "1", steps=0)
    os.remove(run / "model.safetensors")
    code, _, err = cli(capsys, "pack", str(run))
    assert code == 2 and "model.safetensors missing" in err
    (run / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    code, _, err = cli(capsys, "pack", str(run))
    assert code == 2 and "model.safetensors" in err
    assert not (run / "model.bsw").exists()
    code, _, err = cli(capsys, "unpack", str(tmp_path / "missing.bsw"))
    assert code == 2 and "does not exist" in err
    run = make_run(tmp_path / "other", "fc", "1", steps=0)
    before = (run / "model.safetensors").read_bytes()
    code, _, err = cli(capsys, "pack", str(run), "--out", str(run / "model.safetensors"))
    assert code == 2 and "would overwrite" in err
    assert (run / "model.safetensors").read_bytes() == before


def test_file_without_a_model_spec_is_refused(tmp_path, capsys):
    run = make_run(tmp_path, "fc", "1", steps=0)
    save_packed(load_trained(run), tmp_path / "bare.bsw", {})
    code, _, err = cli(capsys, "unpack", str(tmp_path / "bare.bsw"))
    assert code == 2 and "no model_spec" in err


def test_console_command_exits_2_without_a_traceback(good_file, tmp_path):
    path = _damaged(good_file, tmp_path, "cut-payload")
    proc = subprocess.run([sys.executable, "-m", "suite", "unpack", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "truncated" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------- a real trained run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    run = tmp_path_factory.mktemp("trained") / "run"
    code = main(["train", "--model", "cnn", "--dataset", "digits", "--precision", "1.58",
                 "--epochs", "1", "--width", "0.5", "--wandb-mode", "disabled",
                 "--threads", "1", "--out", str(run)])
    assert code == 0
    return run


def test_pack_of_a_trained_run_matches_what_training_wrote(trained_run, tmp_path, capsys):
    result = json.loads((trained_run / "result.json").read_text())
    code, packed, _ = cli(capsys, "pack", str(trained_run), "--out", str(tmp_path / "again.bsw"))
    assert code == 0
    assert (tmp_path / "again.bsw").read_bytes() == (trained_run / "model.bsw").read_bytes()
    assert packed["file_bytes"] == result["packed_bytes"]
    assert packed["bits_per_weight"] == result["packed_bits_per_weight"]
    assert packed["bits_per_weight"] <= 1.01 * math.log2(3)
    code, unpacked, _ = cli(capsys, "unpack", str(trained_run / "model.bsw"))
    assert code == 0
    assert unpacked["max_abs_logit_diff"] <= LOGIT_TOL


def test_every_file_of_a_run_has_the_mode_a_plain_write_gives(trained_run, tmp_path, capsys):
    """safetensors writes 0600: the weights were the one file of a run its group could not read."""
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    code, _, _ = cli(capsys, "unpack", str(trained_run / "model.bsw"),
                     "--out", str(tmp_path / "weights.safetensors"))
    assert code == 0
    files = [p for p in trained_run.rglob("*") if p.is_file()] + [tmp_path / "weights.safetensors"]
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == \
        {p.name: expected for p in files}


@pytest.mark.parametrize("precision", ["fp32", "2.32"])
def test_pack_reports_the_sizes_result_json_reports_under_the_same_names(tmp_path, capsys,
                                                                       precision):
    """One name, one definition: `bitsweep pack` and result.json agreed on no size before (pack's
    fp32_bytes counted buffers too, its compression was against the file), and an fp32 run packed
    at 0.0 bits per weight."""
    run = tmp_path / "run"
    assert main(["train", "--model", "cnn", "--dataset", "digits", "--precision", precision,
                 "--epochs", "1", "--width", "0.5", "--wandb-mode", "disabled",
                 "--threads", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    result = json.loads((run / "result.json").read_text())
    code, packed, _ = cli(capsys, "pack", str(run), "--out", str(tmp_path / "again.bsw"))
    assert code == 0
    shared = set(packed) & set(result)
    assert {"fp32_bytes", "quantized_bytes", "compression", "packed_compression"} <= shared
    for name in shared - {"params"}:
        assert packed[name] == result[name], name
    assert packed["file_bytes"] == result["packed_bytes"]
    assert packed["bits_per_weight"] == result["packed_bits_per_weight"]
    if precision == "fp32":
        assert packed["bits_per_weight"] == 32.0 and packed["params_quantized"] == 0
