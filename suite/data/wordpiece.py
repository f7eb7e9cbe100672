"""WordPiece tokens for the LM corpora, as paper 1 uses on WikiText-103 (vocabulary 30,522).

The tokenizer is trained with the `tokenizers` library on the corpus's normalised train split
only (the same printable-ASCII text the char tokens see, case kept) and cached in
<data_dir>/tokenizers/ under the corpus name, the vocabulary size and the sha256 of that train
text, so a changed corpus or size trains a new one and nothing is ever fetched pretrained. The
splits' token ids are cached beside it (.ids.pt), keyed by the sha256 of the tokenizer file and
of each split.

Pre-tokenisation is BERT's: words split at whitespace and at every ASCII punctuation character,
which become tokens of their own. So decode(encode(text)) is not the text itself but its words
and punctuation marks joined by single spaces (`word_pieces` says exactly what): line breaks and
indentation are not tokens, and per-token loss and perplexity are per WordPiece token.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from suite.data.errors import DatasetError
from suite.data.paths import write_atomically
from suite.data.splits import DataSplits
from suite.data.text import build_token_splits

if TYPE_CHECKING:
    from tokenizers import Tokenizer

UNK = "[UNK]"
DEFAULT_VOCAB_SIZE = 30_522  # paper 1's, BERT's
# Every character normalise_text can leave, bar the whitespace: a word-initial character unseen in
# train still gets a token instead of turning its whole word into [UNK].
_ALPHABET = [chr(c) for c in range(33, 127)] + ["\x1a"]
_LINES_PER_BATCH = 50_000
_WORDS = re.compile(r"[A-Za-z0-9\x1a]+|[^A-Za-z0-9\x1a \n]")


def word_pieces(text: str) -> str:
    """What decode(encode(text)) gives for normalised text without [UNK]: each run of letters,
    digits and fallback characters, and each other non-space character, joined by one space."""
    return " ".join(_WORDS.findall(text))


def tokenizer_path(data_dir: Path, corpus: str, vocab_size: int, train: bytes) -> Path:
    """Where the tokenizer of (corpus, vocab_size, normalised train text) is cached."""
    digest = hashlib.sha256(train).hexdigest()[:16]
    return data_dir / "tokenizers" / f"{corpus}-wordpiece-{vocab_size}-{digest}.json"


def _lines(text: bytes) -> list[str]:
    # Normalised text is ASCII, and a line break never falls inside a word.
    return text.decode("ascii").split("\n")


def train_wordpiece(train: bytes, vocab_size: int) -> Tokenizer:
    """A WordPiece tokenizer with exactly `vocab_size` tokens learnt from normalised `train`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # cleanup=False: the default glues "a ." into "a." and "do n't" into "don't", i.e. guesses.
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=[UNK], initial_alphabet=_ALPHABET, show_progress=False
    )
    tokenizer.train_from_iterator(_lines(train), trainer)
    got = tokenizer.get_vocab_size()
    if got > vocab_size:
        raise DatasetError(
            f"vocab_size={vocab_size} is below the {got} single characters and [UNK] that this "
            f"train split's vocabulary starts from; use vocab_size >= {got}"
        )
    if got < vocab_size:
        raise DatasetError(
            f"vocab_size={vocab_size}, but this train split yields only {got} WordPiece tokens "
            f"(every word and piece it has); use vocab_size <= {got}"
        )
    return tokenizer


def load_or_train(path: Path, train: bytes, vocab_size: int) -> Tokenizer:
    """The tokenizer cached at `path` (see tokenizer_path), trained on `train` and cached first
    when there is none."""
    from tokenizers import Tokenizer

    if not path.is_file():
        tokenizer = train_wordpiece(train, vocab_size)
        write_atomically(path, tokenizer.save)
        return tokenizer
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception for a bad file
        raise DatasetError(f"cached tokenizer {path} cannot be read ({exc}); delete it to retrain") from exc
    if tokenizer.get_vocab_size() != vocab_size:
        raise DatasetError(
            f"cached tokenizer {path} has {tokenizer.get_vocab_size()} tokens, not {vocab_size}; "
            "delete it to retrain"
        )
    return tokenizer


def encode_wordpiece(tokenizer: Tokenizer, text: bytes) -> torch.Tensor:
    """int64 token ids of normalised `text`, line by line (lines encode in parallel)."""
    chunks = []
    lines = _lines(text)
    for start in range(0, len(lines), _LINES_PER_BATCH):
        batch = tokenizer.encode_batch_fast(lines[start : start + _LINES_PER_BATCH], add_special_tokens=False)
        chunks.extend(np.asarray(e.ids, dtype=np.int64) for e in batch)
    return torch.from_numpy(np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64))


def encoded_parts(tokenizer: Tokenizer, path: Path, parts: tuple[bytes, ...]) -> tuple[torch.Tensor, ...]:
    """Token ids of each part, cached beside the tokenizer (`path` with .ids.pt) and keyed by the
    sha256 of the tokenizer file and of each part: encoding WikiText-103 takes minutes, reading
    its ids a second."""
    ids_path = path.with_suffix(".ids.pt")
    digests = [hashlib.sha256(blob).hexdigest() for blob in (path.read_bytes(), *parts)]
    if ids_path.is_file():
        try:
            blob = torch.load(ids_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a truncated or foreign file
            raise DatasetError(f"cached token ids {ids_path} cannot be read ({exc}); delete it") from exc
        if blob.get("digests") == digests:
            return tuple(ids.long() for ids in blob["ids"])
    ids = tuple(encode_wordpiece(tokenizer, part) for part in parts)
    # int32 halves the file; ids stay below the vocabulary size.
    blob = {"digests": digests, "ids": [t.to(torch.int32) for t in ids]}
    write_atomically(ids_path, lambda tmp: torch.save(blob, tmp))
    return ids


def build_wordpiece_splits(
    name: str,
    parts: tuple[bytes, ...],
    block_size: int,
    subset: int | None,
    data_dir: Path,
    vocab_size: int,
) -> DataSplits:
    """DataSplits of WordPiece windows of normalised train/val/test text, built as the char ones
    (block_size windows, targets shifted by one, `subset` = first n train windows)."""
    path = tokenizer_path(data_dir, name, vocab_size, parts[0])
    tokenizer = load_or_train(path, parts[0], vocab_size)
    tokens = encoded_parts(tokenizer, path, parts)
    return build_token_splits(
        name, tokens, block_size, subset, num_classes=vocab_size, tokenizer="wordpiece"
    )
