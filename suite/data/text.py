"""Char-level tokens for text corpora: a small fixed alphabet, encoding, and LM windows.

Every corpus is reduced to printable ASCII plus newline before tokenising, so vocabularies stay
small (< 100) and comparable across corpora: CRLF/CR become "\\n", a tab becomes a space, and
every other character (accents, CJK, control codes) becomes FALLBACK_CHAR, ASCII SUB ("\\x1a"),
the character made for exactly this. The vocabulary is the sorted set of characters that occur
in the normalised corpus (all splits), so a token id never points at an unused slot and the
same text always gives the same ids.
"""

from __future__ import annotations

import codecs

import numpy as np
import torch

from suite.data.errors import DatasetError
from suite.data.splits import DataSplits, make_splits

FALLBACK_CHAR = "\x1a"
_ERROR_HANDLER = "bitsweep-fallback"


def _one_fallback_per_char(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    return FALLBACK_CHAR * (exc.end - exc.start), exc.end


codecs.register_error(_ERROR_HANDLER, _one_fallback_per_char)

# Byte -> byte after normalisation (input bytes are ASCII by then).
_BYTE_MAP = np.full(256, ord(FALLBACK_CHAR), dtype=np.uint8)
_BYTE_MAP[32:127] = np.arange(32, 127, dtype=np.uint8)
_BYTE_MAP[ord("\n")] = ord("\n")
_BYTE_MAP[ord("\r")] = ord("\n")
_BYTE_MAP[ord("\t")] = ord(" ")


def normalise_text(text: str) -> bytes:
    """The text reduced to printable ASCII + newline + FALLBACK_CHAR, as bytes (1 per char)."""
    raw = text.replace("\r\n", "\n").encode("ascii", errors=_ERROR_HANDLER)
    return _BYTE_MAP[np.frombuffer(raw, dtype=np.uint8)].tobytes()


_CHUNK = 1 << 24


def normalise_utf8(raw: bytes, source: str) -> bytes:
    """normalise_text of UTF-8 bytes, decoded in chunks so a WikiText-103-sized file never sits
    in memory as one str (up to 4 bytes per char). Raises DatasetError if it is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    out, carry = [], ""
    try:
        for start in range(0, len(raw), _CHUNK):
            last = start + _CHUNK >= len(raw)
            text = carry + decoder.decode(raw[start : start + _CHUNK], final=last)
            # Hold back a trailing CR: its LF may open the next chunk.
            carry = "\r" if text.endswith("\r") and not last else ""
            out.append(normalise_text(text[: len(text) - len(carry)]))
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{source} is not UTF-8 text ({exc}); delete it and fetch again"
        ) from exc
    return b"".join(out)


def build_vocab(*parts: bytes) -> str:
    """Sorted characters that occur in any of the normalised parts."""
    counts = np.zeros(256, dtype=np.int64)
    for part in parts:
        counts += np.bincount(np.frombuffer(part, dtype=np.uint8), minlength=256)
    return "".join(chr(b) for b in np.flatnonzero(counts))


def encode(normalised: bytes, vocab: str) -> torch.Tensor:
    """int64 token ids of normalised bytes under `vocab`."""
    lut = np.full(256, -1, dtype=np.int64)
    lut[[ord(c) for c in vocab]] = np.arange(len(vocab))
    ids = lut[np.frombuffer(normalised, dtype=np.uint8)]
    if ids.size and ids.min() < 0:
        bad = sorted({chr(b) for b in np.frombuffer(normalised, np.uint8)[ids < 0][:20]})
        raise DatasetError(f"characters {bad!r} are not in the vocabulary")
    return torch.from_numpy(ids)


def lm_windows(tokens: torch.Tensor, block_size: int, split: str) -> tuple[torch.Tensor, ...]:
    """Non-overlapping (x, y) windows of `block_size` tokens; y is x shifted by one token.

    Both are views of `tokens` (no copy), so treat them as read-only. The tail that does not
    fill a whole window is dropped.
    """
    if block_size < 1:
        raise DatasetError(f"block_size={block_size} must be >= 1")
    n = (len(tokens) - 1) // block_size
    if n < 1:
        raise DatasetError(
            f"the {split} split has {len(tokens)} tokens, too few for one window of "
            f"block_size={block_size} (+1 target); use a smaller block_size"
        )
    x = tokens[: n * block_size].view(n, block_size)
    y = tokens[1 : n * block_size + 1].view(n, block_size)
    return x, y


def contiguous_split(data: bytes, fractions: tuple[float, float, float]) -> tuple[bytes, ...]:
    """Cut one corpus into train/val/test at fixed fractions of its length, in order."""
    n = len(data)
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return data[:a], data[a:b], data[b:]


def build_token_splits(
    name: str,
    tokens: tuple[torch.Tensor, ...],
    block_size: int,
    subset: int | None,
    *,
    num_classes: int,
    tokenizer: str,
    vocab: str | None = None,
) -> DataSplits:
    """DataSplits of train/val/test token ids of any tokenizer; `subset` keeps the first n train
    windows."""
    tensors = {}
    for split, ids in zip(("train", "val", "test"), tokens, strict=True):
        x, y = lm_windows(ids, block_size, split)
        if split == "train" and subset is not None:
            if subset > len(x):
                raise DatasetError(
                    f"subset={subset} windows, but {name} train has only {len(x)} windows of "
                    f"block_size={block_size}; use subset <= {len(x)} or subset=None"
                )
            x, y = x[:subset], y[:subset]
        tensors[f"{split}_x"], tensors[f"{split}_y"] = x, y
    return make_splits(
        name,
        "text",
        tensors,
        num_classes=num_classes,
        input_shape=(block_size,),
        image_kind=None,
        vocab=vocab,
        tokenizer=tokenizer,
    )


def build_text_splits(
    name: str, parts: tuple[bytes, ...], block_size: int, subset: int | None
) -> DataSplits:
    """DataSplits of char tokens of normalised train/val/test text (see build_token_splits)."""
    vocab = build_vocab(*parts)
    tokens = tuple(encode(part, vocab) for part in parts)
    return build_token_splits(
        name, tokens, block_size, subset, num_classes=len(vocab), tokenizer="char", vocab=vocab
    )
