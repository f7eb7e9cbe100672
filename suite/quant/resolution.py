"""Weight resolution: one definition used by the CLI, the sweep files and the report labels.

A resolution is a number of levels N on the symmetric uniform grid ``(i - (N-1)/2) * s``,
i = 0..N-1. Zero is a level iff N is odd; bits = log2(N). Two special resolutions run through the
same layers: ``fp32`` (quantisation off) and ``bnn`` (binary normalized, {0, 1}, arXiv 2509.07025).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# The papers name resolutions by their (rounded) bit count; "4.08" is paper 2's spelling of log2 17.
LABELS: dict[str, int] = {
    "1": 2,
    "1.58": 3,
    "2": 4,
    "2.32": 5,
    "3": 8,
    "3.17": 9,
    "4": 16,
    "4.09": 17,
    "4.08": 17,
}
_CANONICAL_LABEL = {n: label for label, n in LABELS.items() if label != "4.08"}

# The most levels a resolution may have: 8 bits with zero (2^8 + 1), the largest grid the
# quantiser tests check on the grid (tests/quant/test_seq.py, across the uint8/int32 index
# boundary) and that the packing tests round-trip. More levels were accepted before and ran
# 700-2000x slower at N=100000 without a word; no question of the papers needs over 4.09 bits.
MAX_LEVELS = 257

ACCEPTED_FORMS = (
    "'fp32', 'bnn', a bit label (1, 1.58, 2, 2.32, 3, 3.17, 4, 4.09/4.08), "
    f"a level count 'N=<int>' with 2 <= N <= {MAX_LEVELS} (e.g. 'N=7'), or a bit budget "
    "'bits=<k>,zero=true|false' (e.g. 'bits=2,zero=true' is N=5; a sweep's bits and zero axes)"
)
# 'bits=2,zero=true' or 'bits: 2, zero: true' (a sweep file's spelling, typed on a command line)
_BUDGET = re.compile(r"bits\s*[=:]\s*(\d+)\s*,\s*zero\s*[=:]\s*(true|false)")


@dataclass(frozen=True)
class Resolution:
    """How a weight tensor is stored: ``fp32``, ``bnn`` or ``levels`` with ``n`` grid values."""

    kind: str  # "fp32" | "bnn" | "levels"
    n: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "levels":
            if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 2:
                raise ValueError(f"levels resolution needs an integer n >= 2, got n={self.n!r}")
            if self.n > MAX_LEVELS:
                raise ValueError(f"N={self.n} levels is more than the {MAX_LEVELS} (8 bits with "
                                 f"zero) that quantisation and packing are tested for; use at "
                                 f"most N={MAX_LEVELS}")
        elif self.kind in ("fp32", "bnn"):
            if self.n is not None:
                raise ValueError(f"{self.kind} resolution takes no n, got n={self.n!r}")
        else:
            raise ValueError(f"unknown resolution kind {self.kind!r}; use fp32, bnn or levels")

    @property
    def quantized(self) -> bool:
        return self.kind != "fp32"

    @property
    def levels(self) -> int | None:
        """Number of distinct stored values; None for fp32 (a float has no level count)."""
        if self.kind == "bnn":
            return 2
        return self.n

    @property
    def bits(self) -> float:
        if self.kind == "fp32":
            return 32.0
        return math.log2(self.levels)

    @property
    def zero(self) -> bool:
        """Whether the grid holds 0 as one of its N symmetric levels (N odd): the zero-in /
        zero-out axis of the papers. fp32 has no grid; bnn's {0, 1} stores 0, but as one of two
        values thresholded at the tensor's mean, not as the centre of a symmetric grid, so it is
        neither side of that comparison (its own grid kind, ``grid == "bnn"``): both are False."""
        return self.kind == "levels" and self.n % 2 == 1

    @property
    def grid(self) -> str:
        """The grid kind: fp32 | bnn | zero | no zero (the report's ``grid`` column)."""
        if self.kind != "levels":
            return self.kind
        return "zero" if self.zero else "no zero"

    @property
    def bit_budget(self) -> int | None:
        """k of a level grid with N = 2^k (zero excluded) or 2^k + 1 (zero included), else None."""
        if self.kind != "levels":
            return None
        m = self.n - 1 if self.zero else self.n
        k = m.bit_length() - 1
        return k if k >= 1 and 2**k == m else None

    @property
    def label(self) -> str:
        if self.kind != "levels":
            return self.kind
        return _CANONICAL_LABEL.get(self.n, f"N={self.n}")

    def __str__(self) -> str:
        return self.label


FP32 = Resolution("fp32")
BNN = Resolution("bnn")


def levels(n: int) -> Resolution:
    return Resolution("levels", n)


def from_bit_budget(k: int, zero: bool) -> Resolution:
    """Bit budget k: N = 2^k without zero (half-integer grid), 2^k + 1 with zero (integer grid)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"bit budget must be an integer >= 1, got {k!r}; accepted: {ACCEPTED_FORMS}")
    if not isinstance(zero, bool):
        raise ValueError(f"zero must be true or false, got {zero!r}")
    return levels(2**k + 1 if zero else 2**k)


def parse_resolution(value: object, zero: bool | None = None) -> Resolution:
    """Parse any accepted spelling of a resolution.

    ``zero`` turns ``value`` into a bit budget k (N = 2^k or 2^k + 1), as in a sweep's
    ``bits: [1, 2]`` x ``zero: [false, true]`` axes. Without it, a number is a bit label
    ("2.32" -> 5 levels); ``N=7`` or ``levels=7`` names a level count directly.
    """
    if isinstance(value, Resolution):
        return value
    if zero is not None:
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return from_bit_budget(value, zero)  # type: ignore[arg-type]
    if isinstance(value, bool) or value is None:
        raise ValueError(f"bad resolution {value!r}; accepted: {ACCEPTED_FORMS}")
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"bad resolution {value!r}; accepted: {ACCEPTED_FORMS}")
        text = f"{value:g}"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip().lower()
    else:
        raise ValueError(f"bad resolution {value!r}; accepted: {ACCEPTED_FORMS}")
    if text in ("fp32", "32", "float", "float32"):
        return FP32
    if text == "bnn":
        return BNN
    if text in LABELS:
        return levels(LABELS[text])
    budget = _BUDGET.fullmatch(text)
    if budget:
        return from_bit_budget(int(budget[1]), budget[2] == "true")
    for prefix in ("n=", "levels="):
        if text.startswith(prefix):
            count = text[len(prefix):]
            if not count.isdigit() or int(count) < 2:
                raise ValueError(
                    f"bad level count {value!r}: N must be an integer >= 2; accepted: {ACCEPTED_FORMS}"
                )
            return levels(int(count))
    raise ValueError(f"bad resolution {value!r}; accepted: {ACCEPTED_FORMS}")
