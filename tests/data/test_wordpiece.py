"""WordPiece tokens for the LM corpora: trained with the real `tokenizers` library, cached in the
data dir, windows built as the char ones."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer

from suite.data import DatasetError, load_dataset
from suite.data.corpora import stdlib_corpus
from suite.data.text import contiguous_split, normalise_text
from suite.data.wordpiece import UNK, word_pieces

VOCAB = 500
BLOCK = 32


def stdlib_parts() -> tuple[str, ...]:
    """stdlib-text's normalised train/val/test text, cut as the loader cuts it."""
    parts = contiguous_split(normalise_text(stdlib_corpus()), (0.90, 0.05, 0.05))
    return tuple(p.decode("ascii") for p in parts)


def stdlib_wordpiece():
    return load_dataset("stdlib-text", tokenizer="wordpiece", vocab_size=VOCAB, block_size=BLOCK)


def test_wordpiece_trains_once_caches_and_round_trips(sandbox):
    splits = stdlib_wordpiece()
    assert (splits.task, splits.tokenizer, splits.num_classes) == ("text", "wordpiece", VOCAB)
    assert splits.input_shape == (BLOCK,) and splits.vocab is None
    for x, y in ((splits.train_x, splits.train_y), (splits.val_x, splits.val_y)):
        assert x.dtype == torch.int64 and x.shape[1] == BLOCK and y.shape == x.shape
        assert torch.equal(x.flatten()[1:], y.flatten()[:-1])  # y = x shifted by one token
        assert int(x.min()) >= 0 and int(x.max()) < VOCAB
    [cached] = (sandbox / "tokenizers").glob("*.json")
    assert cached.name.startswith(f"stdlib-text-wordpiece-{VOCAB}-")  # + the train text's sha256
    ids_file = cached.with_suffix(".ids.pt")  # the splits' token ids
    files = sorted((sandbox / "tokenizers").iterdir())
    assert files == sorted([cached, ids_file])
    stamps = [p.stat().st_mtime_ns for p in files]

    assert stdlib_wordpiece().checksum == splits.checksum
    # Read, not trained (or encoded) and written again.
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert sorted((sandbox / "tokenizers").iterdir()) == files

    # Stale token ids (here: of another tokenizer) are noticed and encoded afresh.
    blob = torch.load(ids_file, weights_only=True)
    blob["digests"][0] = "0" * 64
    torch.save({**blob, "ids": [t[:10] for t in blob["ids"]]}, ids_file)
    assert stdlib_wordpiece().checksum == splits.checksum
    assert torch.load(ids_file, weights_only=True)["digests"][0] != "0" * 64  # and replaced

    # The cached file is a plain `tokenizers` tokenizer with the vocabulary size asked for, and
    # the windows are its ids of the train text, in order.
    tokenizer = Tokenizer.from_file(str(cached))
    assert tokenizer.get_vocab_size() == VOCAB
    train, val, _ = stdlib_parts()
    ids = tokenizer.encode(train[:20_000], add_special_tokens=False).ids
    assert splits.train_x[0].tolist() == ids[:BLOCK]
    # Round trip on held-out text: decode(encode(x)) is x's words and punctuation marks joined by
    # single spaces (line breaks and indentation are not tokens), with no [UNK] on the way.
    encoded = tokenizer.encode(val, add_special_tokens=False)
    assert tokenizer.token_to_id(UNK) not in encoded.ids
    assert tokenizer.decode(encoded.ids) == word_pieces(val)
    assert word_pieces("def f(x):\n    return x_1 + 2") == "def f ( x ) : return x _ 1 + 2"


def test_vocab_size_keys_the_cache_and_char_stays_the_default(sandbox):
    small = load_dataset("stdlib-text", tokenizer="wordpiece", vocab_size=200, block_size=BLOCK)
    assert small.num_classes == 200
    assert [p.name.split("-")[3] for p in (sandbox / "tokenizers").glob("*.json")] == ["200"]
    char = load_dataset("stdlib-text", block_size=BLOCK)
    assert (char.tokenizer, char.num_classes) == ("char", len(char.vocab))
    # WordPiece packs more text into a window: fewer windows over the same train text.
    assert len(small.train_x) < 0.75 * len(char.train_x)


def test_wordpiece_on_downloaded_corpora_and_vocabularies_they_cannot_fill(served, sandbox):
    wiki = load_dataset("wikitext2", tokenizer="wordpiece", vocab_size=120, block_size=8)
    assert (wiki.tokenizer, wiki.num_classes) == ("wordpiece", 120)
    assert len(wiki.test_x) > 0
    with pytest.raises(DatasetError, match=r"vocab_size=30522, but this train split yields only \d+"):
        load_dataset("tinyshakespeare", tokenizer="wordpiece", block_size=8)  # default: 30,522
    with pytest.raises(DatasetError, match=r"vocab_size=50 is below the \d+ single characters"):
        load_dataset("tinyshakespeare", tokenizer="wordpiece", vocab_size=50, block_size=8)
    assert [p.name.split("-")[0] for p in (sandbox / "tokenizers").glob("*.json")] == ["wikitext2"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tokenizer": "bpe"}, "tokenizer='bpe' is unknown; choose one of char, wordpiece"),
        ({"vocab_size": 500}, "vocab_size=500 applies only to tokenizer='wordpiece'"),
        ({"tokenizer": "wordpiece", "vocab_size": 0}, "vocab_size=0 must be a positive integer"),
    ],
)
def test_bad_tokenizer_options_are_refused(options, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset("stdlib-text", **options)


def test_a_sweep_checks_its_corpora_in_the_tokenizer_its_runs_use(sandbox):
    """The sweep's parent loads every dataset of the grid before any worker starts, as the runs
    will load it: a WordPiece grid trains (and caches) its tokenizer there, once."""
    from suite.sweep.driver import check_datasets
    from suite.sweep.spec import parse_spec

    spec = parse_spec({"study": "wp", "fixed": {"model": "lm", "dataset": "stdlib-text",
                                                "tokenizer": "wordpiece", "vocab_size": 300},
                       "grid": {"precision": ["fp32", "1"]}})
    check_datasets(spec)
    assert [p.name.split("-")[:4] for p in (sandbox / "tokenizers").glob("*.json")] == \
        [["stdlib", "text", "wordpiece", "300"]]
