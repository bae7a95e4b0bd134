"""Pure metrics against hand-computed values."""

import math

import numpy as np
import pytest

from hpm_ray import metrics as m


def test_pinball_loss_by_hand():
    y = np.array([1.0, 2.0, 3.0])
    q = np.array([2.0, 2.0, 2.0])
    # tau=0.9: errors -1, 0, +1 -> 0.1*1, 0, 0.9*1 -> mean 1/3
    assert m.pinball_loss(y, q, 0.9) == pytest.approx((0.1 + 0 + 0.9) / 3)
    assert m.pinball_loss(y, q, 0.5) == pytest.approx((0.5 + 0 + 0.5) / 3)
    # one-sided misses tell tau from 1 - tau: under-prediction costs tau per unit, over-prediction 1 - tau
    assert m.pinball_loss([1.0], [1.5], 0.9) == pytest.approx(0.05)
    assert m.pinball_loss([1.0], [0.5], 0.9) == pytest.approx(0.45)
    qs = np.column_stack([q, q])
    assert m.mean_pinball(y, qs, [0.9, 0.5]) == pytest.approx(((1.0 / 3) + (1.0 / 3)) / 2)


def test_coverage_width_and_crossing():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    lo, hi = np.array([-1, 1, 2.5, 0]), np.array([1, 2, 3, 3])
    assert m.coverage(y, lo, hi) == 0.75  # bounds are inclusive; row 3 misses (2 < 2.5)
    assert m.mean_width(lo, hi) == pytest.approx((2 + 1 + 0.5 + 3) / 4)
    q = np.array([[1, 2, 3], [1, 3, 2], [2, 2, 2], [3, 2, 1]])
    assert m.crossing_rate(q) == 0.5


def test_ks_statistic_by_hand():
    y = np.array([0, 0, 1, 1])
    assert m.ks_statistic(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    # positives {0.3, 0.9}, negatives {0.1, 0.5}: CDF gap is 0.5 at t=0.1 and t=0.3..0.5
    assert m.ks_statistic(y, np.array([0.1, 0.5, 0.3, 0.9])) == 0.5
    assert m.ks_statistic(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        m.ks_statistic(np.array([1, 1]), np.array([0.1, 0.2]))


def test_ece_by_hand():
    # bin (0.9, 1.0]: confidences .95, .95 with one right -> |0.5 - 0.95| = 0.45, weight 2/4
    # bin (0.6, 0.7]: confidences .65, .65, both right -> |1 - 0.65| = 0.35, weight 2/4
    proba = np.array([0.95, 0.05, 0.65, 0.35])
    y = np.array([1, 1, 1, 0])
    assert m.expected_calibration_error(y, proba, n_bins=10) == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)


def test_kl_and_agreement():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    q = np.array([[0.5, 0.5], [0.5, 0.5]])
    expected = (0 + 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)) / 2
    assert m.kl_divergence(p, q) == pytest.approx(expected)
    assert m.kl_divergence(np.array([0.1, 0.9]), np.array([0.1, 0.9])) == pytest.approx(0.0, abs=1e-9)
    assert m.agreement(np.array([0.2, 0.7, 0.6]), np.array([0.4, 0.3, 0.9])) == pytest.approx(2 / 3)


def test_psi_by_hand():
    # counts 50/50 vs 80/20: (0.8-0.5)ln(1.6) + (0.2-0.5)ln(0.4)
    assert m.psi_counts(np.array([50, 50]), np.array([80, 20])) == pytest.approx(
        0.3 * np.log(1.6) + (-0.3) * np.log(0.4)
    )
    rng = np.random.default_rng(0)
    ref = rng.normal(size=5000)
    assert m.psi(ref, rng.normal(size=5000)) < 0.02
    assert m.psi(ref, rng.normal(loc=1.0, size=5000)) > 0.2
    assert m.psi(np.ones(100), np.ones(50)) == pytest.approx(0.0)


def test_pinball_matches_sklearn_mean_pinball_loss():
    from sklearn.metrics import mean_pinball_loss

    rng = np.random.default_rng(1)
    y, q = rng.normal(size=300), rng.normal(size=300)
    for tau in (0.05, 0.5, 0.9):
        assert m.pinball_loss(y, q, tau) == pytest.approx(mean_pinball_loss(y, q, alpha=tau))


def test_kl_matches_scipy_relative_entropy():
    from scipy.stats import entropy

    rng = np.random.default_rng(2)
    p, q = rng.dirichlet(np.ones(3), 50), rng.dirichlet(np.ones(3), 50)
    assert m.kl_divergence(p, q) == pytest.approx(float(np.mean(entropy(p, q, axis=1))))


def test_registry_scores_by_hand_and_f1_is_macro():
    y = np.array([0, 0, 0, 1])  # class 1 is the minority
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])  # predicts 0, 0, 1, 1
    got = {name: s(y, proba) for name, s in m.SCORERS.items()}
    assert got["accuracy"] == 0.75
    # class 0: precision 2/2, recall 2/3, F1 4/5; class 1: precision 1/2, recall 1/1, F1 2/3
    assert got["precision"] == pytest.approx((1 + 0.5) / 2) and got["recall"] == pytest.approx((2 / 3 + 1) / 2)
    assert got["f1"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert m.per_class(y, proba) == pytest.approx(
        {"precision_0": 1.0, "precision_1": 0.5, "recall_0": 2 / 3, "recall_1": 1.0}
    )
    assert got["auc"] == 1.0 and got["ks"] == 1.0  # every positive outscores every negative
    assert got["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.3, 0.8])))
    assert got["brier"] == pytest.approx(np.mean([0.01, 0.16, 0.49, 0.04]))


@pytest.mark.parametrize("name", sorted(m.SCORERS))
def test_registry_direction_prefers_the_informative_model(name):
    """``greater_is_better`` is right for every scorer: a calibrated model, right 90% of the time at 0.9
    confidence, beats a coin flip."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    called = np.where(rng.random(400) < 0.9, y, 1 - y)
    good = np.column_stack([np.where(called == 0, 0.9, 0.1), np.where(called == 1, 0.9, 0.1)])
    noise = rng.uniform(0.3, 0.7, 400)
    coin = np.column_stack([1 - noise, noise])
    scorer = m.get_scorer(name)
    assert scorer.better(scorer(y, good), scorer(y, coin))
    assert scorer.gain(scorer(y, good), scorer(y, coin)) > 0


def test_unknown_scorer_is_named():
    with pytest.raises(ValueError, match="unknown metric 'f2'; known: auc"):
        m.get_scorer("f2")


def test_ks_is_binary_only_in_the_registry():
    with pytest.raises(ValueError, match="binary"):
        m.get_scorer("ks")(np.array([0, 1, 2]), np.eye(3))


def test_group_coverage_se_by_hand():
    from hpm_ray.metrics import group_coverage_se

    y, lo, hi = np.array([0.0, 2.0, 0.0, 0.0]), -np.ones(4), np.ones(4)  # covered: 1, 0, 1, 1
    # lag 0: d = [.25, -.75, .25, .25], sum d^2 = 0.75 -> sqrt(0.75) / 4 (the binomial-like SE)
    assert group_coverage_se(y, lo, hi, np.zeros(4), 1, 0) == [pytest.approx(math.sqrt(0.75) / 4)]
    # lag 1: + 2 x (1 - 1/2) x (-.1875 - .1875 + .0625) = -0.3125 -> sqrt(0.4375) / 4
    assert group_coverage_se(y, lo, hi, np.zeros(4), 1, 1) == [pytest.approx(math.sqrt(0.4375) / 4)]
    # group 0 = rows 1, 3: d = [0, -.5, 0, .5], sum d^2 = 0.5, lag 2 adds 2 x (1 - 2/3) x (.5 x -.5): v = 1/3, the lag
    # running over time, not within the group; group 1 = rows 0, 2 (both covered: 0); group 2 has no rows
    g = np.array([1, 0, 1, 0])
    assert group_coverage_se(y, lo, hi, g, 3, 2) == [pytest.approx(math.sqrt(1 / 3) / 2), 0.0, None]
    # misses in runs: the HAC SE of a coverage is larger than the binomial one
    runs = np.repeat(np.random.default_rng(0).random(200) < 0.1, 10)
    yy = np.where(runs, 2.0, 0.0)
    hac, iid = (group_coverage_se(yy, -np.ones(2000), np.ones(2000), np.zeros(2000), 1, lag)[0] for lag in (9, 0))
    assert hac > 2.5 * iid


def test_float32_probabilities_are_scored_without_a_warning_and_as_in_float64():
    """XGBoost's and LightGBM's predict_proba are float32: rows sum to 1 only to ~1e-7, which scikit-learn's
    check (rtol 1.5e-8) flags on every distillation run; the metrics undo that rounding and nothing more."""
    import warnings

    rng = np.random.default_rng(0)
    p64 = rng.dirichlet([1.0, 1.0, 1.0], size=500)
    y = rng.integers(0, 3, size=500)
    p32 = p64.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.log_loss(y, p32) == pytest.approx(m.log_loss(y, p64), rel=1e-5)
        assert m.brier_score(y, p32) == pytest.approx(m.brier_score(y, p64), rel=1e-5)
    with pytest.warns(UserWarning, match="do not sum to one"):  # real non-probabilities still warn
        m.log_loss(y, p64 * 0.9)
