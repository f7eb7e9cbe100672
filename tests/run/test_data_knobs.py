"""RunConfig's data knobs (image_size, tokenizer, vocab_size) and amp: validated on construction
against the dataset's own rules, listed by --help, and passed on to load_dataset."""

from __future__ import annotations

from typing import Any

import pytest

import suite.run.train as run_train
from suite.data import TOKENIZERS
from suite.run.config import AMP_MODES, ConfigError, RunConfig, field_choices, flag_help

LM = {"model": "lm", "dataset": "stdlib-text"}


@pytest.mark.parametrize("values", [
    {"model": "cnn-paper1-3x3", "dataset": "food101", "image_size": 256},
    {**LM, "tokenizer": "wordpiece"},
    {**LM, "tokenizer": "wordpiece", "vocab_size": 500},
    {"model": "lm-paper1-small", "dataset": "wikitext103", "tokenizer": "wordpiece",
     "vocab_size": 30_522, "block_size": 256, "amp": "bf16"},
    {"amp": "fp16"},  # a CUDA-only mode is refused where the device is known: at prepare time
])
def test_accepted(values: dict[str, Any]) -> None:
    config = RunConfig(**values)
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(("values", "message"), [
    ({"tokenizer": "wordpiece"}, r"tokenizer='wordpiece' applies only to the text corpora"),
    ({**LM, "tokenizer": "bpe"}, r"tokenizer='bpe': choose one of char, wordpiece"),
    ({"image_size": 64}, r"image_size=64 applies only to food101; 'digits' has a fixed size"),
    ({"dataset": "food101", "image_size": 0}, r"image_size=0: must be >= 1"),
    ({"dataset": "food101", "image_size": 32.5}, r"image_size=32.5: must be an integer"),
    ({**LM, "vocab_size": 500}, r"vocab_size=500 applies only to tokenizer='wordpiece'"),
    ({**LM, "tokenizer": "wordpiece", "vocab_size": -3}, r"vocab_size=-3: must be >= 1"),
    ({"amp": "fp8"}, r"amp='fp8': choose one of off, bf16, fp16"),
    ({"amp": None}, r"amp=None: must not be null"),
    ({"data_placement": "gpu"}, r"data_placement='gpu': choose one of auto, device, stream"),
])
def test_refused_naming_the_field(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig(**values)


def test_help_lists_the_new_choices() -> None:
    assert field_choices("tokenizer") == TOKENIZERS
    assert field_choices("amp") == AMP_MODES
    assert "one of char, wordpiece" in flag_help("tokenizer")
    assert flag_help("amp").endswith("one of off, bf16, fp16 (default: off)")
    assert flag_help("image_size").endswith("(default: null)")


def test_dataset_for_passes_the_knobs_to_load_dataset(monkeypatch) -> None:
    seen: list[dict[str, Any]] = []

    def load(name: str, **kwargs: Any) -> str:
        seen.append({"name": name, **kwargs})
        return f"splits {len(seen)}"

    monkeypatch.setattr(run_train, "load_dataset", load)
    monkeypatch.setattr(run_train, "_DATA_CACHE", type(run_train._DATA_CACHE)())
    food = RunConfig(model="cnn-paper1-3x3", dataset="food101", image_size=128)
    text = RunConfig(**LM, tokenizer="wordpiece", vocab_size=700)
    assert run_train.dataset_for(food) == "splits 1"
    assert run_train.dataset_for(text) == "splits 2"
    assert seen[0]["image_size"] == 128 and seen[0]["tokenizer"] == "char"
    assert seen[1]["tokenizer"] == "wordpiece" and seen[1]["vocab_size"] == 700
    assert seen[1]["image_size"] is None
    # a different knob is different data, never a cached neighbour's
    assert run_train.dataset_for(text.replace(vocab_size=800)) == "splits 3"
    assert run_train.dataset_for(food.replace(image_size=None)) == "splits 4"
    assert run_train.dataset_for(text) == "splits 2" and len(seen) == 4
