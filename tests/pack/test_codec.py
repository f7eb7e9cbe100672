"""The index codec: level indices <-> a mixed-radix bit stream at close to log2(N) bits each."""

import math

import numpy as np
import pytest

from suite.pack.codec import (
    _stream_to_words,
    _word_dtype,
    _words_to_stream,
    entropy_bits,
    group_for,
    group_for_count,
    pack_indices,
    packed_nbytes,
    unpack_indices,
)

LEVELS = [2, 3, 4, 5, 8, 9, 16, 17]


# --------------------------------------------------------------------------- index streams


@pytest.mark.parametrize("n", LEVELS)
def test_group_choice_is_valid_and_within_one_percent(n):
    g, b = group_for(n)
    assert n**g <= 2**b <= 2**64
    assert b / g <= 1.01 * math.log2(n)
    if n & (n - 1) == 0:  # powers of two: plain bit packing
        assert (g, b) == (1, int(math.log2(n)))


@pytest.mark.parametrize("n", [*LEVELS, 31, 256, 257, 1000])
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (1001,), (3, 5, 7), (2, 3, 3, 3)])
def test_index_stream_round_trip_exact(n, shape):
    rng = np.random.default_rng(n)
    x = rng.integers(0, n, size=shape).astype(np.uint8 if n <= 256 else np.int32)
    data = pack_indices(x, n)
    g, b = group_for(n)
    assert len(data) == packed_nbytes(x.size, g, b)
    y = unpack_indices(data, n, x.size)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y.reshape(shape), x)


def test_index_stream_crosses_chunks_and_keeps_extremes():
    # More groups than one internal chunk, and every level including N-1 at the stream's end.
    n = 17
    g, _ = group_for(n)
    x = np.resize(np.arange(n, dtype=np.uint8), (1 << 18) * g + 5)
    np.testing.assert_array_equal(unpack_indices(pack_indices(x, n), n, x.size), x)


@pytest.mark.parametrize("b", range(1, 65))
def test_word_streams_of_every_width_match_a_bit_by_bit_reference(b):
    # Group words are b = 1..64 bits wide depending on N; several code paths serve them.
    wd = _word_dtype(b)
    rng = np.random.default_rng(b)
    for m in (1, 7, 8, 9, 1001):
        v = (rng.integers(0, 2**63, m, dtype=np.uint64) >> np.uint64(max(63 - b, 0))).astype(wd)
        if b == 64:
            v |= np.uint64(1 << 63)
        bits = np.unpackbits(v.view(np.uint8).reshape(m, -1), axis=1, bitorder="little")[:, :b]
        ref = np.packbits(bits.reshape(-1), bitorder="little")
        stream = _words_to_stream(v, b)
        np.testing.assert_array_equal(stream, ref)
        np.testing.assert_array_equal(_stream_to_words(stream, m, b), v)


@pytest.mark.parametrize("n", LEVELS)
def test_measured_bits_per_weight_within_one_percent_of_log2n(n):
    x = np.random.default_rng(0).integers(0, n, size=300_001).astype(np.uint8)
    bits = 8 * len(pack_indices(x, n)) / x.size
    assert bits <= 1.01 * math.log2(n)


@pytest.mark.parametrize("n", LEVELS)
def test_group_per_tensor_size_never_costs_more_and_round_trips(n):
    g_inf, b_inf = group_for(n)
    rng = np.random.default_rng(n)
    for count in (1, 2, 5, 10, 29, 72, 100, 1000, 4097, 300_001):
        g, b = group_for_count(n, count)
        assert n**g <= 2**b <= 2**64
        assert packed_nbytes(count, g, b) <= packed_nbytes(count, g_inf, b_inf)
        x = rng.integers(0, n, size=count).astype(np.uint8)
        data = pack_indices(x, n, g, b)
        assert len(data) == packed_nbytes(count, g, b)
        np.testing.assert_array_equal(unpack_indices(data, n, count, g, b), x)
    if n == 3:  # 72 trits: 15 bytes (the minimum, ceil(72 log2 3 / 8)); groups of 29 take 18
        assert packed_nbytes(72, *group_for_count(3, 72)) == 15 < packed_nbytes(72, 29, 46)
    assert group_for_count(n, 10**7)[1] / group_for_count(n, 10**7)[0] == b_inf / g_inf
    with pytest.raises(ValueError, match="cannot pack"):
        pack_indices(np.zeros(4, np.uint8), 3, 2, 3)  # 3^2 = 9 > 2^3


def test_index_stream_rejects_bad_input():
    with pytest.raises(ValueError, match="0..2"):
        pack_indices(np.array([0, 3], np.uint8), 3)
    with pytest.raises(ValueError, match="bytes"):
        unpack_indices(b"\x00", 3, 100)
    # An all-ones 46-bit word is 2^46 - 1 >= 3^29: no group of 29 trits packs to it.
    g, b = group_for(3)
    with pytest.raises(ValueError, match="outside"):
        unpack_indices(b"\xff" * packed_nbytes(g, g, b), 3, g)


def test_entropy_bits():
    assert entropy_bits(np.zeros(10, np.uint8), 3) == 0.0
    assert entropy_bits(np.arange(4, dtype=np.uint8), 4) == pytest.approx(2.0)
    x = np.array([1] * 8 + [0, 2], np.uint8)  # mostly the zero level of a ternary grid
    h = -(0.8 * math.log2(0.8) + 2 * 0.1 * math.log2(0.1))
    assert entropy_bits(x, 3) == pytest.approx(h)
    assert h < math.log2(3)
