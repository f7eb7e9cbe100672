"""Claim verdicts on constructed runs where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from suite.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_TESTED,
    OPPOSITE,
    RULES,
    SPECS,
    SUPPORTED,
    VERDICTS,
    check_claim,
    evaluate_claims,
    interval_verdict,
    interval_verdicts,
    rules_markdown,
)
from suite.report.frame import frames_from_records
from suite.report.stats import prepare, stratified_bootstrap, stratified_welch
from suite.report.tables import claims_table, to_markdown

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
    res = check_claim("C1", _data(runs))
    assert res.verdict == SUPPORTED, res
    assert -2 < res.ci_low < res.estimate < res.ci_high < 2
    assert (res.strata, res.n_a, res.n_b) == (1, 5, 5)


def test_2232_far_below_fp32_is_contradicted():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 4))]
    runs += [_run("2.32", s, a) for s, a in enumerate(_accs(0.72, 4))]
    res = check_claim("C1", _data(runs))
    assert res.verdict == CONTRADICTED
    assert res.ci_high < -2
    assert "outside ±2" in res.reason


def test_noisy_gap_straddling_the_margin_is_inconclusive():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 3, sd=0.03))]
    runs += [_run("2.32", s, a) for s, a in enumerate(_accs(0.79, 3, sd=0.03))]
    res = check_claim("C1", _data(runs))
    assert res.verdict == INCONCLUSIVE
    assert "crosses" in res.reason


def test_one_seed_per_side_is_inconclusive_and_says_why():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    runs += [_run("2.32", 0, 0.80)]
    res = check_claim("C1", _data(runs))
    assert res.verdict == INCONCLUSIVE
    assert res.reason == "fewer than 2 runs per side in every matched setting (best: 1 vs 3)"
    assert np.isnan(res.estimate)


def test_unmatched_settings_are_not_compared():
    # fp32 only at width 64, 2.32 only at width 32: no like-for-like comparison exists.
    runs = [_run("fp32", s, a, width=64) for s, a in enumerate(_accs(0.80, 3))]
    runs += [_run("2.32", s, a, width=32) for s, a in enumerate(_accs(0.80, 3))]
    res = check_claim("C1", _data(runs))
    assert res.verdict == INCONCLUSIVE
    assert res.reason == "no setting holds both groups of runs"


def test_missing_groups_are_named():
    runs = [_run("2.32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    assert check_claim("C1", _data(runs)).reason == "no fp32 runs"
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    assert check_claim("C5", _data(runs)).reason == "no bnn runs"


def test_bnn_claim_uses_bnn_runs():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.70, 4))]
    runs += [_run("bnn", s, a) for s, a in enumerate(_accs(0.637, 4))]
    res = check_claim("C5", _data(runs))
    assert res.verdict == CONTRADICTED
    assert res.estimate == pytest.approx(-6.3, abs=1.0)


def test_augmentation_claim():
    runs = []
    for p in ("1", "2"):
        runs += [_run(p, s, 0.7, augment="none", drop=d) for s, d in enumerate(_accs(0.01, 3))]
        runs += [_run(p, s, 0.7, augment="standard", drop=d)
                 for s, d in enumerate(_accs(0.08, 3))]
    assert check_claim("C3", _data(runs)).verdict == SUPPORTED
    flat = [dict(r, result=dict(r["result"], max_val_acc_drop=0.01 + RNG.normal(0, 1e-3)))
            for r in runs]
    res = check_claim("C3", _data(flat))
    assert res.verdict == CONTRADICTED and "no meaningful effect" in res.reason
    only_none = [r for r in runs if r["result"]["augment"] == "none"]
    res = check_claim("C3", _data(only_none))
    assert res.verdict == NOT_TESTED and "no augmentation variation" in res.reason


def test_augmentation_claim_ignores_high_resolution():
    runs = [_run("4", s, 0.7, augment=a, drop=0.01 if a == "none" else 0.2)
            for s in range(3) for a in ("none", "standard")]
    assert "no level-grid runs" in check_claim("C3", _data(runs)).reason


def test_zero_claim_and_diverged_runs_count_as_unstable():
    runs = []
    for s in range(3):
        # diverged zero-free runs with a small recorded drop still count as losing their accuracy
        runs.append(_run("2", s, 0.7, drop=0.0, diverged=True))
        runs.append(_run("2.32", s, 0.7, drop=0.01 + RNG.normal(0, 1e-3)))
    res = check_claim("C4", _data(runs))
    assert res.verdict == SUPPORTED
    assert res.estimate > 10
    swapped = [dict(r, result=dict(r["result"], precision={"2": "2.32", "2.32": "2"}[
        r["result"]["precision"]])) for r in runs]
    # zero-included runs diverging: the effect runs the other way, beyond the margin
    res = check_claim("C4", _data(swapped))
    assert res.verdict == OPPOSITE and "the opposite effect" in res.reason


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
    res = check_claim("C4", data)
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
    res = check_claim("C1", _data(runs))
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
    res = check_claim("C4", _data(runs))
    assert res.verdict == NOT_TESTED and "fewer than 3 epochs" in res.reason


def test_diverged_runs_left_out_of_accuracy_claims_are_named():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    runs += [_run("2.32", s, a) for s, a in enumerate(_accs(0.80, 3))]
    runs.append(_run("2.32", 9, float("nan"), diverged=True))
    res = check_claim("C1", _data(runs))
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
    res = check_claim("C2", _data(runs))
    assert res.verdict == SUPPORTED, res
    assert res.estimate == pytest.approx(5.0, abs=0.5)
    same = [r for r in runs if r["result"]["width"] == 64]
    res = check_claim("C2", _data(same))
    assert res.verdict == NOT_TESTED and "no width variation" in res.reason


def test_epochs_claim_no_difference_is_contradicted():
    runs = []
    for s in range(3):
        for width in (16, 64):
            runs.append(_run("fp32", s, 0.8, width=width, curves=_curve(3)))
            runs.append(_run("2", s, 0.8, width=width, curves=_curve(5)))
    res = check_claim("C2", _data(runs))
    assert res.verdict == CONTRADICTED and "no meaningful effect" in res.reason


def test_bootstrap_is_seeded_and_stratified():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 1.0])
    one = stratified_bootstrap([(a, b)], seed=7)
    assert one == stratified_bootstrap([(a, b)], seed=7)
    assert one[0] == pytest.approx(5 / 3)
    # a second stratum with a zero difference halves the mean difference
    two = stratified_bootstrap([(a, b), (b, b)], seed=7)
    assert two[0] == pytest.approx(5 / 6)


def test_evaluate_claims_returns_every_claim_in_order():
    runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.8, 2))]
    results = evaluate_claims(_data(runs))
    assert [r.id for r in results] == ["C1", "C2", "C3", "C3-lr", "C4", "C4-lr", "C5",
                                       "C1-mem", "C6", "C7"]
    assert all(r.verdict == NOT_TESTED and r.reason for r in results)


def test_accuracy_claims_use_each_models_longest_budget():
    """Short budgets are claim C2's business: a 2.32 model 10 points behind after 5 epochs and
    level after 20 reaches the fp32 accuracy."""
    runs = []
    for epochs, gap in ((5, 0.10), (20, 0.002)):
        runs += [_run("fp32", s, a, epochs=epochs) for s, a in enumerate(_accs(0.80, 3))]
        runs += [_run("2.32", s, a, epochs=epochs) for s, a in enumerate(_accs(0.80 - gap, 3))]
    for r in runs:
        r["run_id"] += f"-e{r['result']['epochs']}"
    res = check_claim("C1", _data(runs))
    assert res.verdict == SUPPORTED, res
    assert (res.strata, res.n_a, res.n_b) == (1, 3, 3)


def test_zero_claim_needs_instability_to_restore():
    runs = []
    for s in range(3):
        runs.append(_run("2", s, 0.7, drop=0.0))
        runs.append(_run("2.32", s, 0.7, drop=0.0))
    res = check_claim("C4", _data(runs))
    assert res.verdict == INCONCLUSIVE and "nothing for zero to restore" in res.reason
    assert res.strata == 1 and res.estimate == 0


# --- verdict rules ---------------------------------------------------------------------------

_EDGES = np.round(np.linspace(-4, 4, 161), 10)  # steps of 0.05: every margin, ±margin and 0 on it


@pytest.mark.parametrize("kind", sorted(RULES))
@pytest.mark.parametrize("margin", [0.25, 1.0, 2.0, 2.5])
def test_exactly_one_rule_holds_for_every_interval(kind, margin):
    lo, hi = np.meshgrid(_EDGES, _EDGES, indexing="ij")
    lo, hi = lo[lo <= hi], hi[lo <= hi]
    held = np.stack([np.asarray(rule.test(lo, hi, margin), dtype=bool) for rule in RULES[kind]])
    assert (held.sum(axis=0) == 1).all(), (lo[held.sum(axis=0) != 1], hi[held.sum(axis=0) != 1])
    # the verdict the report uses is the one rule that holds, whatever order they are checked in
    expected = np.array([rule.verdict for rule in RULES[kind]], dtype=object)[held.argmax(axis=0)]
    assert (interval_verdicts(kind, lo, hi, margin) == expected).all()
    for i in range(0, len(lo), 97):
        assert interval_verdict(kind, lo[i], hi[i], margin) == expected[i]
    assert set(expected) <= set(VERDICTS)


def test_effect_rules_put_the_margin_first():
    """The rerun that flipped C4: [-0.00, +0.65] and [+0.07, +0.70] are both no meaningful
    effect, though the second excludes 0."""
    verdict = {(lo, hi): interval_verdict("effect", lo, hi, 1.0) for lo, hi in [
        (-0.004, 0.65), (0.07, 0.70), (0.5, 1.5), (-1.5, -0.1), (-0.5, 1.5), (-1.5, 0.5),
        (1.0, 1.0)]}
    assert verdict == {(-0.004, 0.65): CONTRADICTED, (0.07, 0.70): CONTRADICTED,
                       (0.5, 1.5): SUPPORTED, (-1.5, -0.1): OPPOSITE, (-0.5, 1.5): INCONCLUSIVE,
                       (-1.5, 0.5): INCONCLUSIVE, (1.0, 1.0): CONTRADICTED}
    assert interval_verdict("effect", float("nan"), 1.0, 1.0) == INCONCLUSIVE


def test_equivalence_rules():
    verdict = {(lo, hi): interval_verdict("equivalence", lo, hi, 2.0) for lo, hi in [
        (-2.0, 2.0), (-2.42, -0.04), (-3.0, -2.1), (2.1, 3.0), (-2.5, 2.5), (1.0, 2.5)]}
    assert verdict == {(-2.0, 2.0): SUPPORTED, (-2.42, -0.04): INCONCLUSIVE,
                       (-3.0, -2.1): CONTRADICTED, (2.1, 3.0): CONTRADICTED,
                       (-2.5, 2.5): INCONCLUSIVE, (1.0, 2.5): INCONCLUSIVE}


def test_every_rule_is_stated_in_the_report_text():
    md = rules_markdown()
    for spec in SPECS.values():
        # interval rules that claims share are written out once ("Rule: as C1")
        assert f"**{spec.id}**" in md and spec.test.interval_rule in md
        assert spec.test.censored is None or spec.test.censored in md
        for rule in RULES[spec.test.kind]:
            assert rule.text.format(m=f"{spec.test.margin:g}", u=spec.test.unit) in spec.rule
    assert "fragile" in md and "80%" in md


def test_claim_rows_are_decided_by_the_interval_rule():
    """On studies across the rules (far, near, equal, noisy), every decided row's verdict is the
    rule of its interval: nothing else decides."""
    seen = set()
    for gap, sd in ((0.0, 0.003), (0.015, 0.003), (0.05, 0.003), (0.01, 0.03), (-0.05, 0.003)):
        runs = [_run("fp32", s, a) for s, a in enumerate(_accs(0.80, 3, sd))]
        runs += [_run("2.32", s, a) for s, a in enumerate(_accs(0.80 - gap, 3, sd))]
        res = check_claim("C1", _data(runs))
        test = SPECS["C1"].test
        assert res.verdict == interval_verdict(test.kind, res.ci_low, res.ci_high, test.margin)
        seen.add(res.verdict)
    assert seen == {SUPPORTED, CONTRADICTED, INCONCLUSIVE}


# --- one row per quantiser and bnn reading ---------------------------------------------------


def _reading_study():
    """bnn CNNs at two conv_norm readings, fp32 repeated per reading (as sweeps/fashion-mnist
    does), and bnn FC runs at the default reading: chw near fp32, c 10 points behind."""
    runs = []
    for norm, gap in (("chw", 0.002), ("c", 0.10)):
        for s in range(3):
            for precision, acc in (("fp32", 0.80), ("bnn", 0.80 - gap)):
                r = _run(precision, s, acc + RNG.normal(0, 0.003))
                r["config"] = {"conv_norm": norm}
                r["run_id"] += f"-{norm}"
                runs.append(r)
    for s in range(3):
        for precision in ("fp32", "bnn"):
            r = _run(precision, s, 0.9 + RNG.normal(0, 0.003), model="fc")
            r["result"]["model"], r["config"] = "fc", {"conv_norm": "chw"}
            r["run_id"] += "-fc"
            runs.append(r)
    return runs


def test_each_bnn_reading_gets_its_own_claim_row():
    results = evaluate_claims(_data(_reading_study()))
    c5 = {r.id: r for r in results if r.id.startswith("C5")}
    assert list(c5) == ["C5 (conv_norm = chw)", "C5 (conv_norm = c)"]  # most runs first
    chw, c = c5["C5 (conv_norm = chw)"], c5["C5 (conv_norm = c)"]
    assert chw.verdict == SUPPORTED and chw.models == "cnn, fc" and chw.n_a == 6
    assert c.verdict == CONTRADICTED and c.models == "cnn" and (c.n_a, c.n_b) == (3, 3)
    assert c.estimate == pytest.approx(-10, abs=1)
    assert "bnn runs with conv_norm = c" in c.statistic
    assert [r.id for r in results if not r.id.startswith("C5")] == [
        "C1", "C2", "C3", "C3-lr", "C4", "C4-lr", "C1-mem", "C6", "C7"]


def test_each_quantiser_gets_its_own_rows_against_the_one_fp32_reference():
    """fp32 runs exist at the default scale rule only (a sweep need not repeat them): each
    quantiser's rows compare with those, and say so."""
    runs = [_run("fp32", s, a, scale_rule="gauss") for s, a in enumerate(_accs(0.80, 3))]
    for rule, gap in (("gauss", 0.002), ("absmean", 0.06)):
        for s, a in enumerate(_accs(0.80 - gap, 3)):
            r = _run("2.32", s, a, scale_rule=rule)
            r["run_id"] += f"-{rule}"
            runs.append(r)
    rows = {r.id: r for r in evaluate_claims(_data(runs))}
    assert [i for i in rows if i.startswith("C1 ")] == ["C1 (scale_rule = absmean)",
                                                       "C1 (scale_rule = gauss)"]
    assert [i for i in rows if i.startswith("C4 ")] == ["C4 (scale_rule = absmean)",
                                                        "C4 (scale_rule = gauss)"]
    assert [i for i in rows if i.startswith("C4-lr")] == ["C4-lr (scale_rule = absmean)",
                                                          "C4-lr (scale_rule = gauss)"]
    assert rows["C1 (scale_rule = gauss)"].verdict == SUPPORTED
    absmean = rows["C1 (scale_rule = absmean)"]
    assert absmean.verdict == CONTRADICTED and absmean.n_b == 3
    assert "reference runs (fp32) have scale_rule = gauss: none with absmean" in absmean.reason
    assert rows["C5"].reason == "no bnn runs"  # bnn is not quantised by a scale rule


def test_one_quantiser_and_one_reading_keep_one_row_per_claim():
    runs = [_run("fp32", s, a, scale_rule="gauss", conv_norm="chw")
            for s, a in enumerate(_accs(0.8, 3))]
    runs += [_run(p, s, a, scale_rule="gauss", conv_norm="chw")
             for p in ("2.32", "bnn") for s, a in enumerate(_accs(0.79, 3))]
    for r in runs:
        r["run_id"] += f"-{r['result']['precision']}"
    results = evaluate_claims(_data(runs))
    assert [r.id for r in results] == list(SPECS)
    md = to_markdown(claims_table(results))  # tables/claims.md, as build_report writes it
    assert md.count("\n") == len(SPECS) + 2 and "| holds |" in md
