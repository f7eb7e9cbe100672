"""Level indices <-> a tight byte stream at close to log2(N) bits per index.

Indices 0..N-1 are packed in groups of ``g`` as one mixed-radix number
``d_0 + d_1 N + ... + d_{g-1} N^(g-1)`` (``d_0`` is the first index of the group) of ``b`` bits,
where ``N^g <= 2^b`` and ``b <= 64``. The groups' ``b``-bit words are concatenated least
significant bit first into a tight byte stream (group ``i`` holds stream bits ``i*b .. i*b+b-1``;
stream bit ``t`` is bit ``t % 8`` of byte ``t // 8``); the last group is padded with zero
indices and the stream with zero bits to a whole byte. Each tensor records its own ``(g, b)``:
the writer picks, among the pairs with ``b`` the bit length of ``N^g - 1``, the one giving the
fewest bytes for the tensor's element count (ties: smaller ``b/g``, then smaller ``g``), see
:func:`group_for_count`; for a large tensor that is the pair with the smallest ``b/g``
(:func:`group_for`), while a small one avoids padding a long last group (72 ternary indices take
15 bytes as two groups of 37 in 59 bits, 18 as three groups of 29 in 46 bits). For N a power of
two it is ``g = 1, b = log2 N``: plain bit packing. The asymptotic pairs for the resolutions of the papers:

====  ===  ===  ============  =========  =====
N     g    b    bits/weight   log2 N     ratio
====  ===  ===  ============  =========  =====
2     1    1    1.0000        1.0000     1.000
3     29   46   1.5862        1.5850     1.001
4     1    2    2.0000        2.0000     1.000
5     3    7    2.3333        2.3219     1.005
8     1    3    3.0000        3.0000     1.000
9     17   54   3.1765        3.1699     1.002
16    1    4    4.0000        4.0000     1.000
17    11   45   4.0909        4.0875     1.001
====  ===  ===  ============  =========  =====

``bnn`` tensors ({0, 1}) are packed as N = 2 and carry no scale.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numpy as np
import torch

MAX_WORD_BITS = 64
# Groups per chunk when (un)packing: a multiple of 8, so every chunk starts on a byte boundary of
# the stream, and small enough that the per-bit scratch arrays stay a few tens of MB.
_CHUNK_GROUPS = 1 << 18


@cache
def group_for(n: int) -> tuple[int, int]:
    """``(g, b)``: pack ``g`` indices of an N-level tensor into one ``b``-bit word.

    The pair with the smallest ``b/g`` over ``g >= 1`` and ``b <= 64`` with ``N^g <= 2^b`` (ties go
    to the smaller ``g``, so powers of two get plain ``log2 N``-bit packing).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"need an integer number of levels >= 2, got {n!r}")
    best: tuple[Fraction, int, int] | None = None
    g = 1
    while True:
        b = (n**g - 1).bit_length()  # bits of the largest group value N^g - 1
        if b > MAX_WORD_BITS:
            break
        ratio = Fraction(b, g)
        if best is None or ratio < best[0]:
            best = (ratio, g, b)
        g += 1
    if best is None:
        raise ValueError(f"N={n} levels do not fit a {MAX_WORD_BITS}-bit word")
    return best[1], best[2]


@cache
def _group_candidates(n: int) -> tuple[tuple[int, int], ...]:
    out = []
    g = 1
    while (b := (n**g - 1).bit_length()) <= MAX_WORD_BITS:
        out.append((g, b))
        g += 1
    return tuple(out)


def group_for_count(n: int, count: int) -> tuple[int, int]:
    """``(g, b)`` giving the fewest bytes for ``count`` indices of an N-level tensor (ties: the
    smaller ``b/g``, then the smaller ``g``); :func:`group_for` once ``count`` is large."""
    group_for(n)  # validates n
    return min(_group_candidates(n),
               key=lambda gb: (packed_nbytes(count, *gb), Fraction(gb[1], gb[0]), gb[0]))


def packed_nbytes(count: int, g: int, b: int) -> int:
    """Bytes of the index stream of ``count`` indices packed ``g`` per ``b``-bit word."""
    return (-(-count // g) * b + 7) // 8


def _word_dtype(b: int) -> np.dtype:
    for size in (1, 2, 4, 8):
        if b <= 8 * size:
            return np.dtype(f"<u{size}")
    raise ValueError(f"word of {b} bits exceeds {MAX_WORD_BITS}")


def _work_dtype(b: int) -> np.dtype | None:
    """Integer wide enough for a b-bit word shifted by up to 7 bits (None: b > 57)."""
    for bits in (16, 32, 64):
        if b + 7 <= bits:
            return np.dtype(f"uint{bits}")
    return None


def _words_to_stream(v: np.ndarray, b: int) -> np.ndarray:
    """The low ``b`` bits of each word, LSB first, as bytes (``len(v) * b`` bits, zero-padded)."""
    m = len(v)
    itemsize = v.dtype.itemsize
    if b == 8 * itemsize:  # whole little-endian words are the stream already (e.g. N=256)
        return v.view(np.uint8)
    if b == 1:
        return np.packbits(v, bitorder="little")
    work = _work_dtype(b)
    if work is None:  # 58..63-bit words: go through a bit array (8 bytes of scratch per bit)
        bits = np.unpackbits(v.view(np.uint8).reshape(-1, itemsize), axis=1, bitorder="little")
        return np.packbits(bits[:, :b].reshape(-1), bitorder="little")
    # 8 words of b bits fill exactly b bytes: build those bytes column by column, each from the
    # (at most ceil((b+7)/8)) words overlapping it, with whole-array shifts.
    pad = (-m) % 8
    if pad:
        v = np.concatenate([v, np.zeros(pad, v.dtype)])
    words = v.reshape(-1, 8)
    out = np.zeros((len(words), b), np.uint8)
    for j in range(8):
        col = words[:, j].astype(work)
        start = j * b
        for k in range(start >> 3, ((start + b - 1) >> 3) + 1):
            off = start - 8 * k  # where the word's bit 0 lands relative to byte k's bit 0
            part = col << work.type(off) if off >= 0 else col >> work.type(-off)
            out[:, k] |= part.astype(np.uint8)  # astype keeps the low 8 bits
    return out.reshape(-1)[: (m * b + 7) // 8]


def _stream_to_words(stream: np.ndarray, m: int, b: int) -> np.ndarray:
    """Inverse of :func:`_words_to_stream`: ``m`` words of ``b`` bits from the byte stream."""
    wd = _word_dtype(b)
    itemsize = wd.itemsize
    if b == 8 * itemsize:
        return stream[: m * itemsize].view(wd)
    if b == 1:
        return np.unpackbits(stream, count=m, bitorder="little")
    work = _work_dtype(b)
    if work is None:
        bits = np.unpackbits(stream, bitorder="little")[: m * b].reshape(m, b)
        wide = np.zeros((m, 8 * itemsize), np.uint8)
        wide[:, :b] = bits
        return np.packbits(wide, axis=1, bitorder="little").view(wd).reshape(m)
    blocks = -(-m // 8)
    need = (m * b + 7) // 8
    if stream.size == blocks * b:
        raw = stream.reshape(blocks, b)
    else:
        raw = np.zeros(blocks * b, np.uint8)
        raw[:need] = stream[:need]
        raw = raw.reshape(blocks, b)
    out = np.empty((blocks, 8), wd)
    mask = work.type((1 << b) - 1)
    for j in range(8):
        start = j * b
        k0, k1 = start >> 3, (start + b - 1) >> 3
        acc = raw[:, k0].astype(work)
        for k in range(k0 + 1, k1 + 1):
            acc |= raw[:, k].astype(work) << work.type(8 * (k - k0))
        out[:, j] = (acc >> work.type(start - 8 * k0)) & mask
    return out.reshape(-1)[:m]


def pack_indices(indices: np.ndarray | torch.Tensor, n: int,
                 g: int | None = None, b: int | None = None) -> bytes:
    """Pack level indices (any shape, values 0..n-1) into the stream described in the module doc,
    ``g`` per ``b``-bit word (default: :func:`group_for`)."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    flat = np.ascontiguousarray(indices).reshape(-1)
    count = flat.size
    if count == 0:
        return b""
    # uint8 / int32 indices are the contract; a float 0/1 tensor still packs if it is integral.
    if not np.issubdtype(flat.dtype, np.integer) and not np.array_equal(flat, np.round(flat)):
        raise ValueError("indices must be integers")
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"indices must lie in 0..{n - 1} for N={n}, found {lo}..{hi}")
    if g is None or b is None:
        g, b = group_for(n)
    elif not (g >= 1 and 1 <= b <= MAX_WORD_BITS and n**g <= 1 << b):
        raise ValueError(f"cannot pack {g} indices of N={n} into a {b}-bit word")
    wd = _word_dtype(b)
    digits = flat.astype(np.uint8 if n <= 256 else wd, copy=False)
    groups = -(-count // g)
    if groups * g != count:
        digits = np.concatenate([digits, np.zeros(groups * g - count, digits.dtype)])
    digits = digits.reshape(groups, g)
    parts = []
    for start in range(0, groups, _CHUNK_GROUPS):
        d = digits[start : start + _CHUNK_GROUPS]
        # Horner from the last digit down, in the word's own dtype: N^g <= 2^b cannot overflow.
        v = d[:, g - 1].astype(wd)
        for j in range(g - 2, -1, -1):
            v *= wd.type(n)
            v += d[:, j]
        parts.append(_words_to_stream(v, b))
    return b"".join(p.tobytes() for p in parts)


def unpack_indices(data: bytes | np.ndarray, n: int, count: int,
                   g: int | None = None, b: int | None = None) -> np.ndarray:
    """Indices (flat, uint8; int32 for N > 256) from a stream made by :func:`pack_indices`.

    Raises ValueError when the stream has the wrong length or holds a value no packing of
    N-level indices can produce.
    """
    if g is None or b is None:
        g, b = group_for(n)
    out_dtype = np.uint8 if n <= 256 else np.int32
    stream = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
    need = packed_nbytes(count, g, b)
    if stream.size != need:
        raise ValueError(f"index stream has {stream.size} bytes, {count} indices need {need}")
    if count == 0:
        return np.zeros(0, out_dtype)
    groups = -(-count // g)
    out = np.empty((groups, g), out_dtype)
    wd = _word_dtype(b)
    bad = False
    for start in range(0, groups, _CHUNK_GROUPS):
        m = min(_CHUNK_GROUPS, groups - start)
        lo = start * b // 8  # exact: start is a multiple of 8 groups
        v = _stream_to_words(stream[lo : lo + packed_nbytes(m, 1, b)], m, b).astype(wd)
        if g == 1:
            # N may be 2^b itself (N=256 in uint8), which the word dtype cannot hold.
            if n < 1 << b:
                bad |= bool((v >= n).any())
            out[start : start + m, 0] = v
            continue
        for j in range(g):
            v, d = np.divmod(v, wd.type(n))
            out[start : start + m, j] = d
        # A word >= N^g (only a corrupted stream has one) leaves a non-zero quotient.
        bad |= bool(v.any())
    flat = out.reshape(-1)
    if bad or flat[count:].any():
        raise ValueError(f"index stream holds values outside the N={n} packing")
    return flat[:count]


def entropy_bits(indices: np.ndarray | torch.Tensor, n: int) -> float:
    """Empirical entropy (bits per index) of the level indices: the size an entropy coder would
    approach, below log2 N when some levels (e.g. zero in a ternary tensor) dominate."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    flat = np.asarray(indices).reshape(-1)
    if flat.size == 0:
        return 0.0
    counts = np.bincount(flat.astype(np.int64), minlength=n)
    p = counts[counts > 0] / flat.size
    return float(-(p * np.log2(p)).sum())
