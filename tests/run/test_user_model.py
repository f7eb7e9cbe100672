"""The user's own model and data: a factory and a loader in a package of the user's, named by
import strings (or registered names), trained by ``bitsweep train`` and by a sweep, rebuilt by
``bitsweep pack``/``unpack`` and ``load_trained`` from the run directory alone; bad input exits 2
with nothing created.

The user's package is written by each test into its own directory, as a user would write it,
under a name of its own (a module once imported stays in ``sys.modules``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from suite.cli import main

pytestmark = pytest.mark.slow

MODELS = '''
import torch
from torch import nn


def mlp(input_shape, num_classes, width=1.0, hidden=16, **kwargs):
    c, h, w = input_shape
    k = max(2, round(hidden * width))
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, k), nn.ReLU(), nn.Linear(k, num_classes))


class Output:
    """What a Hugging Face model returns: the logits among other things."""

    def __init__(self, logits, hidden):
        self.logits = logits
        self.hidden_states = hidden


class TokenModel(nn.Module):
    def __init__(self, vocab, dim):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids):
        hidden = self.embed(ids)
        return Output(self.head(hidden), hidden)


def token_model(input_shape, num_classes, dim=8, **kwargs):
    return TokenModel(num_classes, dim)


def broken(input_shape, num_classes, **kwargs):
    raise RuntimeError("my factory is broken")


def not_a_module(**kwargs):
    return "a string"


def wrong_logits(input_shape, num_classes, **kwargs):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes + 1))
'''

DATA = '''
import numpy as np


def blobs(n=90, classes=3, side=4, seed=0):
    rng = np.random.default_rng(seed)

    def split(k):
        y = np.arange(k) % classes
        x = rng.normal(size=(k, 1, side, side)).astype(np.float32) + 2.0 * y[:, None, None, None]
        return x, y

    return {"task": "image", "train": split(n), "val": split(n // 3), "test": split(n // 3),
            "num_classes": classes}


def tokens(n=1200, vocab=7):
    ids = np.arange(n) % vocab
    return {"task": "text", "train": ids, "val": ids[:200], "test": ids[:200], "vocab_size": vocab}


def flat_images():
    x = np.zeros((30, 16), dtype=np.float32)
    y = np.arange(30) % 2
    return {"task": "image", "train": (x, y), "val": (x, y), "test": (x, y)}


def text_without_vocab():
    return {"task": "text", "train": [1, 2, 3] * 100, "val": [1, 2] * 50, "test": [1, 2] * 50}


def failing(**kwargs):
    raise OSError("the data server is down")
'''


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A directory holding the user's package (models and data), the current directory, as
    where a user runs bitsweep; returns it and the package's name."""
    package = f"userpkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "models.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / package / "data.py").write_text(textwrap.dedent(DATA))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path, package


def _train(*args: str) -> int:
    return main(["train", "--epochs", "1", "--wandb-mode", "disabled", *args])


def test_a_user_factory_and_loader_train_and_rebuild_from_the_run_dir(user_dir, capsys) -> None:
    from suite.pack.rundir import unpack_file
    from suite.run.train import load_trained

    root, pkg = user_dir
    out = root / "runs" / "mine"
    assert _train("--model", f"{pkg}.models:mlp", "--model-args", "{hidden: 12}",
                  "--dataset", f"{pkg}.data:blobs", "--dataset-args", "{n: 60, classes: 3}",
                  "--precision", "2", "--out", str(out)) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["model"] == f"{pkg}.models:mlp" and result["task"] == "image"
    assert result["model_args"] == {"hidden": 12} and result["dataset_args"]["n"] == 60
    # every weight quantised (biases stay fp32 on level grids): 16*12 + 12*3 weights
    assert result["params_quantized"] == 16 * 12 + 12 * 3
    spec = json.loads((out / "model.json").read_text())
    assert spec["kind"] == "user" and spec["factory"] == f"{pkg}.models:mlp"
    assert spec["model_args"] == {"hidden": 12} and spec["input_shape"] == [1, 4, 4]
    assert spec["num_classes"] == 3 and spec["qconfig"]["resolution"] == "2"
    # the run directory alone rebuilds it: no config, no registration, the factory re-imported
    model = load_trained(out)
    x = torch.randn(5, 1, 4, 4)
    with torch.no_grad():
        stored = model[1].quantized_tensors()["weight"]
        assert stored.n == 4 and set(stored.indices.unique().tolist()) <= {0, 1, 2, 3}  # 2 bits
        assert len(model[1].quantized_weight().unique()) <= 4
    assert main(["pack", str(out), "--out", str(root / "packed.bsw")]) == 0
    assert main(["unpack", str(root / "packed.bsw")]) == 0
    row = unpack_file(out / "model.bsw")
    assert row["loads"] and row["output_shape"] == [2, 3] and row["max_abs_logit_diff"] == 0.0
    with torch.no_grad():
        assert model(x).shape == (5, 3)


def test_a_model_returning_logits_in_an_object_trains_on_user_text(user_dir) -> None:
    from suite.pack.rundir import unpack_file

    root, pkg = user_dir
    out = root / "runs" / "text"
    assert _train("--model", f"{pkg}.models:token_model", "--dataset", f"{pkg}.data:tokens",
                  "--dataset-args", "{n: 20000}", "--block-size", "16", "--precision", "1.58",
                  "--epochs", "3", "--lr", "0.05", "--out", str(out)) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == "text" and result["val_ppl"] is not None
    # a periodic token stream is learnable (the next token is a function of this one): the
    # logits went through the step, the loss and the optimiser
    assert result["val_acc"] > 0.5, result
    spec = json.loads((out / "model.json").read_text())
    assert spec["input_shape"] == [16] and spec["num_classes"] == 7
    row = unpack_file(out)
    assert row["output_shape"] == [2, 16, 7] and row["max_abs_logit_diff"] == 0.0


def _refused(capsys, *args: str) -> str:
    assert _train(*args, "--out", "runs/bad") == 2
    assert not Path("runs").exists(), "nothing may be created for bad input"
    return capsys.readouterr().err


@pytest.mark.parametrize(("model", "dataset", "says"), [
    ("nosuchpkg.models:mlp", "{pkg}.data:blobs",
     ["model='nosuchpkg.models:mlp'", "ModuleNotFoundError", "nosuchpkg"]),
    ("{pkg}.models:nope", "{pkg}.data:blobs", ["model='{pkg}.models:nope'", "no attribute 'nope'"]),
    ("{pkg}.models:broken", "{pkg}.data:blobs",
     ["model='{pkg}.models:broken'", "RuntimeError: my factory is broken"]),
    ("{pkg}.models:not_a_module", "{pkg}.data:blobs",
     ["model='{pkg}.models:not_a_module'", "str, not a torch nn.Module"]),
    ("{pkg}.models:wrong_logits", "{pkg}.data:blobs",
     ["model='{pkg}.models:wrong_logits'", "(2, 4)", "(2, 3)"]),
    ("{pkg}.models:mlp", "{pkg}.data:flat_images",
     ["dataset='{pkg}.data:flat_images'", "(30, 16)", "(N, C, H, W)"]),
    ("{pkg}.models:token_model", "{pkg}.data:text_without_vocab",
     ["dataset='{pkg}.data:text_without_vocab'", "vocab_size"]),
    ("{pkg}.models:mlp", "{pkg}.data:failing",
     ["dataset='{pkg}.data:failing'", "OSError: the data server is down"]),
    ("{pkg}.models:mlp", "nosuchpkg:load", ["dataset='nosuchpkg:load'", "ModuleNotFoundError"]),
    ("cnn", "{pkg}.data:tokens", ["dataset='{pkg}.data:tokens'", "model 'cnn' needs an image"]),
    ("{pkg}.models:mlp", "{pkg}.data:tokens", ["model='{pkg}.models:mlp'", "ValueError"]),
])
def test_bad_user_code_exits_2_naming_field_string_and_error(user_dir, capsys, model, dataset,
                                                             says) -> None:
    _, pkg = user_dir
    err = _refused(capsys, "--model", model.format(pkg=pkg), "--dataset", dataset.format(pkg=pkg))
    for text in says:
        assert text.format(pkg=pkg) in err, err


def test_arguments_for_built_ins_and_reserved_arguments_are_refused(user_dir, capsys) -> None:
    _, pkg = user_dir
    assert "model_args" in _refused(capsys, "--model", "cnn", "--model-args", "{hidden: 3}")
    err = _refused(capsys, "--model", f"{pkg}.models:mlp", "--model-args", "{num_classes: 3}",
                   "--dataset", f"{pkg}.data:blobs")
    assert "num_classes" in err and "model_args" in err
    assert "import string" in _refused(capsys, "--model", "mypkg.models.mlp")


def _bitsweep(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("bitsweep")
    return subprocess.run([str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "WANDB_MODE": "disabled",
                                            "WANDB_SILENT": "true", **(env or {})})


def test_a_sweep_of_a_user_model_runs_in_workers_and_packs_without_the_sweep_file(user_dir) -> None:
    """Two cells, two spawned workers: each imports the user's package from the directory the
    command runs in (the installed script's own sys.path does not hold it)."""
    root, pkg = user_dir
    (root / "user.yaml").write_text(textwrap.dedent(f"""\
        study: user
        fixed: {{model: "{pkg}.models:mlp", model_args: {{hidden: 8}},
                dataset: "{pkg}.data:blobs", epochs: 1, wandb_mode: disabled}}
        grid:
          precision: [fp32, 1.58]
        workers: 2
        """))
    done = _bitsweep(root, "sweep", "user.yaml")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["complete"] == 2 and summary["failed"] == 0
    packed = sorted((root / "runs" / "user" / "trials").glob("*/model.bsw"))
    assert len(packed) == 2
    # a W&B agent's call of the same study, then the report over all three
    agent = _bitsweep(root, "agent-run", "user.yaml", "--precision=1.58")
    assert agent.returncode == 0, agent.stderr
    assert json.loads(agent.stdout.strip().splitlines()[-1])["model"] == f"{pkg}.models:mlp"
    report = _bitsweep(root, "report", "user.yaml")
    assert report.returncode == 0, report.stderr
    results = (root / "runs" / "user" / "report" / "results.csv").read_text().splitlines()
    assert len(results) == 1 + 3 and all(f"{pkg}.models:mlp" in row for row in results[1:])
    (root / "user.yaml").unlink()  # the run directories alone rebuild the models
    for path in packed:
        unpacked = _bitsweep(root, "unpack", str(path))
        assert unpacked.returncode == 0, unpacked.stderr
        row = json.loads(unpacked.stdout)
        assert row["model"] == f"{pkg}.models:mlp" and row["max_abs_logit_diff"] == 0.0


def test_a_sweep_whose_factory_raises_exits_2_before_any_storage(user_dir) -> None:
    root, pkg = user_dir
    (root / "bad.yaml").write_text(textwrap.dedent(f"""\
        study: bad
        fixed: {{dataset: "{pkg}.data:blobs", epochs: 1, wandb_mode: disabled}}
        grid:
          model: ["{pkg}.models:mlp", "{pkg}.models:broken"]
        """))
    done = _bitsweep(root, "sweep", "bad.yaml")
    assert done.returncode == 2, done.stderr
    assert f"model='{pkg}.models:broken'" in done.stderr
    assert "RuntimeError: my factory is broken" in done.stderr
    assert not (root / "runs").exists()


def test_registered_names_from_a_plugin_module(user_dir) -> None:
    """register_model/register_dataset in a module of $BITSWEEP_PLUGINS: the short names work on
    the command line; the run directory records the factory's import string, so unpack needs
    neither the plugin nor the registration."""
    root, pkg = user_dir
    (root / f"{pkg}_plugin.py").write_text(textwrap.dedent(f"""\
        from suite.data import register_dataset
        from suite.models import register_model
        from {pkg}.data import blobs
        from {pkg}.models import mlp

        register_model("my-mlp", mlp, task="image")
        register_dataset("my-blobs", blobs, task="image")
        """))
    env = {"BITSWEEP_PLUGINS": f"{pkg}_plugin"}
    done = _bitsweep(root, "train", "--model", "my-mlp", "--dataset", "my-blobs", "--epochs", "1",
                     "--precision", "1", "--out", "runs/reg", env=env)
    assert done.returncode == 0, done.stderr
    spec = json.loads((root / "runs" / "reg" / "model.json").read_text())
    assert spec["name"] == "my-mlp" and spec["factory"] == f"{pkg}.models:mlp"
    unpacked = _bitsweep(root, "unpack", "runs/reg/model.bsw")  # no BITSWEEP_PLUGINS
    assert unpacked.returncode == 0, unpacked.stderr
    # without the plugin the short name is unknown, and said so before anything is created
    refused = _bitsweep(root, "train", "--model", "my-mlp", "--out", "runs/none")
    assert refused.returncode == 2 and "model='my-mlp': unknown model" in refused.stderr
    assert not (root / "runs" / "none").exists()
