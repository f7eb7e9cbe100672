"""The oscillation rate: constructed level sequences with a known count of oscillations."""

from __future__ import annotations

import pytest
import torch

from suite.run.oscillation import OscillationTracker


def feed(tracker: OscillationTracker, steps: list[list[int]], key: str = "w") -> None:
    for levels in steps:
        tracker.update({key: torch.tensor(levels)})


def ema_of(shares: list[float], m: float) -> float:
    """The bias-corrected EMA of per-step shares, written out."""
    ema = 0.0
    for share in shares:
        ema = (1 - m) * ema + m * share
    return ema / (1 - (1 - m) ** len(shares))


def test_a_constructed_sequence_gives_its_known_oscillation_count() -> None:
    # five weights, levels over six steps
    steps = [
        [0, 0, 2, 1, 3],
        [1, 0, 2, 2, 3],  # w0 up, w3 up
        [0, 1, 2, 2, 3],  # w0 back down: oscillation; w1 up (its first move)
        [1, 2, 2, 1, 3],  # w0 back up: oscillation; w1 up again: no; w3 back down after standing: oscillation
        [1, 2, 1, 1, 2],  # w2 down (first move), w4 down (first move): none
        [2, 2, 0, 2, 3],  # w0 up after up: no; w2 down again: no; w3 up after down: osc; w4 back up: osc
    ]
    per_step = [0, 1, 2, 0, 2]  # oscillations at steps 2..6 (the first step only sets the levels)
    m = 0.5
    tracker = OscillationTracker(momentum=m)
    feed(tracker, steps)
    assert tracker.rate == pytest.approx(ema_of([c / 5 for c in per_step], m), rel=1e-6)


def test_bias_correction_makes_a_constant_share_read_as_itself() -> None:
    # every weight flips back and forth at every step: after the first move, the share is 1
    tracker = OscillationTracker()
    feed(tracker, [[0, 1], [1, 0], [0, 1], [1, 0]])
    # step 2 only sets the direction (share 0), steps 3 and 4 oscillate everywhere
    assert tracker.rate == pytest.approx(ema_of([0.0, 1.0, 1.0], 0.01), rel=1e-6)
    steady = OscillationTracker()
    feed(steady, [[i % 2, (i + 1) % 2] for i in range(400)])
    assert steady.rate == pytest.approx(1.0, abs=0.01)


def test_weights_that_only_progress_or_stand_still_never_oscillate() -> None:
    tracker = OscillationTracker()
    feed(tracker, [[0, 3, 1], [1, 3, 1], [2, 2, 1], [2, 1, 1], [3, 0, 1]])
    assert tracker.rate == 0.0


def test_several_tensors_are_one_share_of_all_their_weights() -> None:
    tracker = OscillationTracker(momentum=1.0)  # momentum 1: the rate is the last step's share
    for a, b in [([0, 0], [0, 0, 0]), ([1, 0], [1, 0, 0]), ([0, 0], [0, 0, 0])]:
        tracker.update({"a": torch.tensor(a), "b": torch.tensor(b)})
    assert tracker.rate == pytest.approx(2 / 5)


def test_no_rate_before_a_move_can_be_seen_and_bad_momentum_is_refused() -> None:
    tracker = OscillationTracker()
    assert tracker.rate is None
    tracker.update({"w": torch.tensor([1, 2])})
    assert tracker.rate is None
    tracker.update({})  # a model without quantised tensors: nothing to track
    assert tracker.rate is None
    with pytest.raises(ValueError, match="momentum=0"):
        OscillationTracker(momentum=0)
