"""`bitsweep train --help`: a meaning, the choices and the default of every RunConfig flag."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from suite.run.config import RunConfig, config_fields, field_choices

CHOICE_FIELDS = ("augment", "conv_norm", "scale_rule", "optimizer", "schedule", "wandb_mode")


@pytest.fixture(scope="module")
def flag_lines() -> dict[str, str]:
    """--help of the installed script, as a user gets it, one line per flag (wide terminal)."""
    script = Path(sys.executable).with_name("bitsweep")
    out = subprocess.run([str(script), "train", "--help"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "1000"}, timeout=60).stdout
    lines: dict[str, str] = {}
    flag = None
    for line in out.splitlines():
        match = re.match(r"\s+--([a-z0-9-]+) (.+?)(?:\s{2,}(.*))?$", line)
        if match:  # "--flag METAVAR  help", or "--flag METAVAR" with the help on the next line
            flag = match.group(1).replace("-", "_")
            lines[flag] = match.group(3) or ""
        elif flag and line.startswith(" " * 8):
            lines[flag] = (lines[flag] + " " + line.strip()).strip()
        else:
            flag = None
    return lines


def test_every_field_has_a_one_line_meaning() -> None:
    for f in dataclasses.fields(RunConfig):
        meaning = f.metadata.get("help", "")
        assert meaning.strip() and "\n" not in meaning, f"RunConfig.{f.name} has no meaning"


def test_every_flag_shows_its_meaning_and_default(flag_lines) -> None:
    assert set(flag_lines) >= set(config_fields())
    for f in dataclasses.fields(RunConfig):
        line = flag_lines[f.name]
        assert line.startswith(f.metadata["help"]), (f.name, line)
        assert "RunConfig." not in line
        assert re.search(r"\(default: [^)]+\)$", line), (f.name, line)
    shown = {"model": "cnn", "width": "1", "depth": "null", "lr": "0.001", "per_channel": "false",
             "dataset": "digits", "tags": "none", "epochs": "10", "quantize_bias": "null"}
    for name, default in shown.items():
        assert flag_lines[name].endswith(f"(default: {default})"), flag_lines[name]


def test_flags_with_choices_list_them(flag_lines) -> None:
    from suite.data import DATASETS
    from suite.models import MODELS, model_norms

    assert f"one of {', '.join(MODELS)}" in flag_lines["model"]
    assert f"one of {', '.join(DATASETS)}" in flag_lines["dataset"]
    for name in CHOICE_FIELDS:
        assert f"one of {', '.join(field_choices(name))}" in flag_lines[name], name
    for model in MODELS:  # norm's choices differ by family
        assert ", ".join(model_norms(model)) in flag_lines["norm"], model
    assert "N=" in flag_lines["precision"] and "bnn" in flag_lines["precision"]
    assert "cuda:<index>" in flag_lines["device"]
    assert "true, false or null" in flag_lines["quantize_bias"]
    assert "true or false" in flag_lines["per_channel"]


def test_the_torch_free_choices_are_the_ones_the_code_uses() -> None:
    """--help and RunConfig read the choices from torch-free names modules; the modules that
    build models, load data and quantise must know exactly those."""
    import suite.models.registry as registry
    from suite.data import DATASETS
    from suite.data.augment import AUGMENTATIONS
    from suite.data.catalog import _LOADERS
    from suite.data.placement import PLACEMENTS
    from suite.models import MODELS, model_task
    from suite.quant.layers import CONV_NORM_AXES
    from suite.quant.scale import scale_rules
    from suite.run.layout import MEMORY_FORMATS

    assert field_choices("model") == MODELS == tuple(sorted(registry._REGISTRY))
    assert field_choices("dataset") == DATASETS == tuple(sorted(_LOADERS))
    for model in MODELS:
        family = registry._family(model)
        assert field_choices("norm", model) == ("auto", *family.norms), model
        assert model_task(model) == family.task, model
    assert field_choices("augment") == AUGMENTATIONS
    assert field_choices("data_placement") == PLACEMENTS
    assert field_choices("memory_format") == MEMORY_FORMATS
    assert field_choices("conv_norm") == tuple(CONV_NORM_AXES)
    assert field_choices("scale_rule") == scale_rules()


def test_help_imports_no_torch() -> None:
    """--help stays instant: no torch (seconds to import), whatever the choices need."""
    code = ("import sys\nfrom suite.cli import main\ntry:\n    main(['train', '--help'])\n"
            "except SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'lightning', 'optuna')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    assert out.strip().splitlines()[-1] == "[]"
