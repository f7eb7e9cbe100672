"""RunConfig.fingerprint() is a compatibility contract: committed studies key their cells by it,
so a configuration that could be written before a field existed keeps its fingerprint for good
(a changed one would re-queue every finished run as new). The pinned values below were computed
by the code before image_size, tokenizer, vocab_size and amp were added (commit 806c892)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from suite.run.config import _ADDED, RunConfig

REPORTS = Path(__file__).resolve().parents[2] / "reports"
STUDY = {"dataset": "digits", "batch_size": 128, "lr": 0.002, "schedule": "cosine", "warmup_epochs": 1}
LM = {"model": "lm", "dataset": "stdlib-text", "subset": 1024, "block_size": 64, "lr": 0.003}
# (configuration, fingerprint(), fingerprint(with_seed=False)) as the earlier code computed them
PINNED: list[tuple[dict[str, Any], str, str]] = [
    ({}, "31627adb", "b6d9e56f"),
    ({**STUDY, "model": "fc", "precision": "1", "augment": "none", "epochs": 4, "seed": 0},
     "ce44061e", "ae8371ed"),
    ({**STUDY, "model": "cnn", "precision": "4.09", "augment": "standard", "epochs": 24, "seed": 2},
     "f409edef", "59a430f4"),
    ({**STUDY, "model": "vit", "precision": "bnn", "augment": "standard", "epochs": 4, "seed": 1},
     "786aed98", "6e3c9615"),
    ({**STUDY, "model": "cnn", "width": 0.25, "precision": "2.32", "epochs": 24, "seed": 0},
     "92ed58c9", "2febfcb0"),
    ({**LM, "precision": "4", "epochs": 6, "seed": 1}, "02360af5", "548cfdd9"),
    ({**LM, "precision": "bnn", "epochs": 2, "seed": 0}, "82cce95a", "7aa60357"),
    ({"model": "cnn-paper1-3x3", "dataset": "food101", "precision": "bnn", "conv_norm": "hw",
      "batch_size": 32, "epochs": 30}, "2b716b04", "d32e8281"),
    ({"model": "lm-paper1-small", "dataset": "wikitext2", "precision": "bnn", "block_size": 256},
     "f6bc2f14", "688da6ee"),
    ({"model": "fc", "dataset": "mnist", "precision": "3", "scale_rule": "lsq", "per_channel": True,
      "quantize_bias": True, "optimizer": "sgd", "grad_clip": 1.0, "weight_decay": 1e-4, "subset": 100},
     "09a269ae", "be3d0123"),
    ({"model": "vit", "dataset": "cifar10", "precision": "1.58", "scale_rule": "seq", "depth": 4,
      "schedule": "linear", "device": "cpu", "threads": 1, "wandb_mode": "disabled", "tags": ["x"]},
     "9e3698f0", "9a4246d3"),
]


@pytest.mark.parametrize(("values", "fingerprint", "without_seed"), PINNED)
def test_earlier_configurations_keep_their_fingerprints(values, fingerprint, without_seed) -> None:
    config = RunConfig.from_dict(values)
    assert config.fingerprint() == fingerprint
    assert config.fingerprint(with_seed=False) == without_seed
    # the same configuration written out today (every new field at its old value) is the same run
    assert RunConfig.from_dict(config.to_dict()).fingerprint() == fingerprint


def _journal_trials(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(slot, config) of every trial of an Optuna journal: trial ids count its create ops."""
    slots, configs = [], {}
    with gzip.open(path, "rt") as fh:
        for line in fh:
            op = json.loads(line)
            if op["op_code"] == 4:  # CREATE_TRIAL
                slots.append(op["user_attrs"].get("slot") or "")
            elif op["op_code"] == 8 and "config" in op["user_attr"]:  # SET_TRIAL_USER_ATTR
                configs[op["trial_id"]] = op["user_attr"]["config"]
    return [(slots[trial], config) for trial, config in configs.items()]


@pytest.mark.parametrize("study", ["default", "fashion-mnist"])
def test_every_committed_trial_keeps_its_slot_fingerprint(study) -> None:
    """The slot of a trial queued since slots carry fingerprints ends in ``@<fingerprint>`` of
    the config it ran: the code of today must compute the very same key from it."""
    trials = [(slot.rpartition("@")[2], config)
              for slot, config in _journal_trials(REPORTS / study / "optuna.journal.gz") if "@" in slot]
    assert trials, f"no trial of {study} has a fingerprinted slot"
    for fingerprint, config in trials:
        assert RunConfig.from_dict(config).fingerprint() == fingerprint, config


@pytest.mark.parametrize(("field", "value"), [
    ("amp", "bf16"), ("tokenizer", "wordpiece"), ("vocab_size", 500), ("image_size", 64),
])
def test_a_new_field_joins_the_fingerprint_once_it_differs_from_its_old_value(field, value) -> None:
    base = {"model": "cnn", "dataset": "food101"} if field == "image_size" else {
        "model": "lm", "dataset": "stdlib-text"}
    if field == "vocab_size":
        base["tokenizer"] = "wordpiece"
    config = RunConfig(**base)
    changed = config.replace(**{field: value})
    assert changed.fingerprint() != config.fingerprint()
    assert changed.fingerprint(with_seed=False) != config.fingerprint(with_seed=False)
    assert changed.group() != config.group()  # W&B groups follow the same hash


def test_the_old_values_are_todays_defaults() -> None:
    """Otherwise a config stored before the field existed would now train differently under the
    same fingerprint."""
    defaults = RunConfig().to_dict()  # in the form stored configs have (lists, not tuples)
    assert {name: defaults[name] for name in _ADDED} == _ADDED


def test_where_the_data_sits_is_not_part_of_the_experiment() -> None:
    config = RunConfig()
    streamed = config.replace(data_placement="stream")
    assert streamed.fingerprint() == config.fingerprint() and streamed.group() == config.group()
    # run files record it only when it is not the default every earlier run had
    assert "data_placement" not in config.to_file_dict()
    assert streamed.to_file_dict()["data_placement"] == "stream"
    assert RunConfig.from_dict(config.to_file_dict()) == config
