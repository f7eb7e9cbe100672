"""Claim verdicts on constructed runs where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from suite.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    claim_2232,
    claim_augment,
    claim_bnn,
    claim_epochs,
    claim_zero,
    evaluate_claims,
)
from suite.report.frame import frames_from_records
from suite.report.stats import prepare, stratified_bootstrap, stratified_welch

RNG = np.random.default_rng(0)


def _run(precision, seed, acc, *, width=64, augment="none", drop=0.01, curves=None, **extra):
    result = {"model": "cnn", "dataset": "cifar10", "precision": precision, "seed": seed,
              "width": width, "augment": augment, "test_acc": acc,
              "best_val_acc": acc, "max_val_acc_drop": drop, "diverged": False, "epochs": 10,
              **extra}
    return {"run_id": f"{precision}-{width}-{augment}-{seed}", "state": "COMPLETE",
            "result": result, "curves": curves}


def _data(runs):
    return prepare(frames_from_records(runs))


def _accs(mean, n, sd=0.003):
    return mean + RNG.normal(0, sd, n)


def test_2232_close_to_fp32_is_supported():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 5))]
    runs += [_run("2.32", s, a) for s, a in enumerate(_accs(0.797, 5))]
    res = claim_2232(_data(runs))
    assert res.verdict == SUPPORTED, res
    assert -2 < res.ci_low < res.estimate < res.ci_high < 2
    assert (res.strata, res.n_a, res.n_b) == (1, 5, 5)


def test_2232_far_below_fp32_is_contradicted():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 4))]
    runs += [_run("2.32", s, a) for s, a in enumerate(_accs(0.72, 4))]
    res = claim_2232(_data(runs))
    assert res.verdict == CONTRADICTED
    assert res.ci_high < -2
    assert "outside ±2" in res.reason


def test_noisy_gap_straddling_the_margin_is_inconclusive():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 3, sd=0.03))]
    runs += [_run("2.32", s, a) for s, a in enumerate(_accs(0.79, 3, sd=0.03))]
    res = claim_2232(_data(runs))
    assert res.verdict == INCONCLUSIVE
    assert "crosses" in res.reason


def test_one_seed_per_side_is_inconclusive_and_says_why():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    runs += [_run("2.32", 0, 0.80)]
    res = claim_2232(_data(runs))
    assert res.verdict == INCONCLUSIVE
    assert res.reason == "fewer than 2 runs per side in every matched setting (best: 1 vs 3)"
    assert np.isnan(res.estimate)


def test_unmatched_settings_are_not_compared():
    # fp32 only at width 64, 2.32 only at width 32: no like-for-like comparison exists.
    runs = [_run("fp32", s, a, width=64) for s, a in enumerate(_accs(0.80, 3))]
    runs += [_run("2.32", s, a, width=32) for s, a in enumerate(_accs(0.80, 3))]
    res = claim_2232(_data(runs))
    assert res.verdict == INCONCLUSIVE
    assert res.reason == "no setting holds both groups of runs"


def test_missing_groups_are_named():
    runs = [_run("2.32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    assert claim_2232(_data(runs)).reason == "no fp32 runs"
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    assert claim_bnn(_data(runs)).reason == "no bnn runs"


def test_bnn_claim_uses_bnn_runs():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.70, 4))]
    runs += [_run("bnn", s, a) for s, a in enumerate(_accs(0.637, 4))]
    res = claim_bnn(_data(runs))
    assert res.verdict == CONTRADICTED
    assert res.estimate == pytest.approx(-6.3, abs=1.0)


def test_augmentation_claim():
    runs = []
    for p in ("1", "2"):
        runs += [_run(p, s, 0.7, augment="none", drop=d) for s, d in enumerate(_accs(0.01, 3))]
        runs += [_run(p, s, 0.7, augment="standard", drop=d)
                 for s, d in enumerate(_accs(0.08, 3))]
    assert claim_augment(_data(runs)).verdict == SUPPORTED
    flat = [dict(r, result=dict(r["result"], max_val_acc_drop=0.01 + RNG.normal(0, 1e-3)))
            for r in runs]
    res = claim_augment(_data(flat))
    assert res.verdict == CONTRADICTED and "no effect" in res.reason
    only_none = [r for r in runs if r["result"]["augment"] == "none"]
    res = claim_augment(_data(only_none))
    assert res.verdict == INCONCLUSIVE and "no augmentation variation" in res.reason


def test_augmentation_claim_ignores_high_resolution():
    runs = [_run("4", s, 0.7, augment=a, drop=0.01 if a == "none" else 0.2)
            for s in range(3) for a in ("none", "standard")]
    assert "no level-grid runs" in claim_augment(_data(runs)).reason


def test_zero_claim_and_diverged_runs_count_as_unstable():
    runs = []
    for s in range(3):
        # diverged zero-free runs with a small recorded drop still count as losing their accuracy
        runs.append(_run("2", s, 0.7, drop=0.0, diverged=True))
        runs.append(_run("2.32", s, 0.7, drop=0.01 + RNG.normal(0, 1e-3)))
    res = claim_zero(_data(runs))
    assert res.verdict == SUPPORTED
    assert res.estimate > 10
    swapped = [dict(r, result=dict(r["result"], precision={"2": "2.32", "2.32": "2"}[
        r["result"]["precision"]])) for r in runs]
    assert claim_zero(_data(swapped)).verdict == CONTRADICTED


def test_one_diverged_run_in_four_is_not_enough():
    """1 of 4 zero-free runs diverged, none with zero: the bootstrap alone calls that an effect
    (its interval excludes 0); the Welch interval over 4 seeds does not, and wins."""
    runs = []
    for s in range(3):
        runs.append(_run("2", s, 0.7, drop=0.02))
        runs.append(_run("2.32", s, 0.7, drop=0.01))
    runs.append(_run("2", 3, 0.7, drop=0.0, diverged=True))
    runs.append(_run("2.32", 3, 0.7, drop=0.01))
    data = _data(runs)
    res = claim_zero(data)
    assert res.verdict == INCONCLUSIVE and "includes 0" in res.reason
    a = np.array([2.0, 2.0, 2.0, 70.0])
    b = np.full(4, 1.0)
    assert stratified_bootstrap([(a, b)])[1] > 0  # the bootstrap interval alone excludes 0
    assert res.ci_low < 0 < res.ci_high


def test_two_seeds_get_an_honest_interval():
    """2 seeds a side: the bootstrap sees 3 distinct means per side; Welch's t with ~2 degrees
    of freedom is several times wider, and the verdict must not claim equivalence."""
    runs = [_run("fp32", s, a) for s, a in enumerate((0.80, 0.83))]
    runs += [_run("2.32", s, a) for s, a in enumerate((0.80, 0.82))]
    res = claim_2232(_data(runs))
    boot = stratified_bootstrap([(np.array([80.0, 82.0]), np.array([80.0, 83.0]))])
    _, lo, hi = stratified_welch([(np.array([80.0, 82.0]), np.array([80.0, 83.0]))])
    assert hi - lo > 3 * (boot[2] - boot[1])
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi))
    assert res.verdict == INCONCLUSIVE


def test_stability_claims_need_enough_epochs():
    runs = []
    for s in range(3):
        runs.append(_run("2", s, 0.7, drop=0.2, epochs=2))
        runs.append(_run("2.32", s, 0.7, drop=0.01, epochs=2))
    res = claim_zero(_data(runs))
    assert res.verdict == INCONCLUSIVE and "fewer than 3 epochs" in res.reason


def test_diverged_runs_left_out_of_accuracy_claims_are_named():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    runs += [_run("2.32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    runs.append(_run("2.32", 9, float("nan"), diverged=True))
    res = claim_2232(_data(runs))
    assert res.verdict == SUPPORTED
    assert res.reason.endswith("runs without accuracy (diverged) left out: 1 2.32")


def _curve(reach: int, final: float = 0.80, epochs: int = 10):
    return [{"epoch": e, "val_acc": min(final, 0.3 + (final - 0.3) * e / reach)}
            for e in range(1, epochs + 1)]


def test_epochs_claim_small_models_slower():
    runs = []
    for s in range(3):
        for width, reach in ((16, 8), (64, 3)):
            runs.append(_run("fp32", s, 0.8, width=width, curves=_curve(3)))
            runs.append(_run("2", s, 0.8, width=width, curves=_curve(reach)))
    res = claim_epochs(_data(runs))
    assert res.verdict == SUPPORTED, res
    assert res.estimate == pytest.approx(5.0, abs=0.5)
    same = [r for r in runs if r["result"]["width"] == 64]
    res = claim_epochs(_data(same))
    assert res.verdict == INCONCLUSIVE and "no width variation" in res.reason


def test_epochs_claim_no_difference_is_contradicted():
    runs = []
    for s in range(3):
        for width in (16, 64):
            runs.append(_run("fp32", s, 0.8, width=width, curves=_curve(3)))
            runs.append(_run("2", s, 0.8, width=width, curves=_curve(5)))
    res = claim_epochs(_data(runs))
    assert res.verdict == CONTRADICTED and "no effect" in res.reason


def test_bootstrap_is_seeded_and_stratified():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 1.0])
    one = stratified_bootstrap([(a, b)], seed=7)
    assert one == stratified_bootstrap([(a, b)], seed=7)
    assert one[0] == pytest.approx(5 / 3)
    # a second stratum with a zero difference halves the mean difference
    two = stratified_bootstrap([(a, b), (b, b)], seed=7)
    assert two[0] == pytest.approx(5 / 6)


def test_evaluate_claims_returns_all_five_in_order():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.8, 2))]
    results = evaluate_claims(_data(runs))
    assert [r.id for r in results] == ["C1", "C2", "C3", "C4", "C5"]
    assert all(r.verdict == INCONCLUSIVE and r.reason for r in results)


def test_accuracy_claims_use_each_models_longest_budget():
    """Short budgets are claim C2's business: a 2.32 model 10 points behind after 5 epochs and
    level after 20 reaches the fp32 accuracy."""
    runs = []
    for epochs, gap in ((5, 0.10), (20, 0.002)):
        runs += [_run("fp32", s, a, epochs=epochs) for s, a in enumerate(_accs(0.80, 3))]
        runs += [_run("2.32", s, a, epochs=epochs) for s, a in enumerate(_accs(0.80 - gap, 3))]
    for r in runs:
        r["run_id"] += f"-e{r['result']['epochs']}"
    res = claim_2232(_data(runs))
    assert res.verdict == SUPPORTED, res
    assert (res.strata, res.n_a, res.n_b) == (1, 3, 3)


def test_zero_claim_needs_instability_to_restore():
    runs = []
    for s in range(3):
        runs.append(_run("2", s, 0.7, drop=0.0))
        runs.append(_run("2.32", s, 0.7, drop=0.0))
    res = claim_zero(_data(runs))
    assert res.verdict == INCONCLUSIVE and "nothing for zero to restore" in res.reason
    assert res.strata == 1 and res.estimate == 0
