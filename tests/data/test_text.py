"""Char tokenisation: the fixed alphabet, chunked UTF-8 decoding, and LM windows."""

from __future__ import annotations

import pytest
import torch

from suite.data import DatasetError, text
from suite.data.text import build_vocab, encode, lm_windows, normalise_text, normalise_utf8

SAMPLE = "Senjō no Valkyria\r\nline two\ttab\r\n日本 — end\rold mac\n"


def test_normalise_maps_to_printable_ascii_with_one_fallback_per_char():
    out = normalise_text(SAMPLE).decode("ascii")
    assert out == ("Senj\x1a no Valkyria\nline two tab\n\x1a\x1a \x1a end\nold mac\n")


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_chunked_utf8_decoding_matches_whole_text(chunk, monkeypatch):
    monkeypatch.setattr(text, "_CHUNK", chunk)  # cut through multi-byte chars and CRLF pairs
    assert normalise_utf8(SAMPLE.encode("utf-8"), "sample") == normalise_text(SAMPLE)


def test_invalid_utf8_is_a_dataset_error():
    with pytest.raises(DatasetError, match="not UTF-8"):
        normalise_utf8(b"abc\xff", "bad.txt")


def test_vocab_encode_and_windows():
    data = normalise_text("abcabcab")
    vocab = build_vocab(data)
    assert vocab == "abc"
    tokens = encode(data, vocab)
    assert tokens.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    x, y = lm_windows(tokens, 3, "train")
    assert x.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert y.tolist() == [[1, 2, 0], [1, 2, 0]]
    assert x.dtype == torch.int64
    with pytest.raises(DatasetError, match="block_size"):
        lm_windows(tokens, 8, "val")
