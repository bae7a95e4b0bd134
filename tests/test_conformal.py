"""Conformal math and quantile metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpm_ray.errors import SpecError
from hpm_ray.hpo.conformal import (
    ConformalQuantiles,
    aci_intervals,
    conformal_quantile,
    cqr_adjust,
    cqr_scores,
    finite_sample_level,
    quantile_pairs,
    rearrange,
)
from hpm_ray.metrics import crossing_rate, mean_pinball, pinball_loss


def test_pinball_loss_by_hand():
    # y - q = -0.5 and +0.5 at tau 0.9: 0.1 * 0.5 = 0.05 and 0.9 * 0.5 = 0.45
    assert pinball_loss([1.0, 2.0], [1.5, 1.5], 0.9) == pytest.approx(0.25)
    # two quantiles: tau 0.1 gives 0.45 and 0.05 on the same residuals -> mean over both quantiles 0.25
    assert mean_pinball(np.array([1.0, 2.0]), np.array([[1.5, 1.5], [1.5, 1.5]]), [0.1, 0.9]) == pytest.approx(0.25)


def test_finite_sample_level():
    assert finite_sample_level(9, 0.1) == 1.0  # ceil(10 * 0.9) / 9
    assert finite_sample_level(19, 0.1) == pytest.approx(18 / 19)
    assert finite_sample_level(100, 0.1) == pytest.approx(0.91)  # ceil(90.9) = 91


def test_conformal_quantile_order_statistic():
    scores = np.array([7, 3, 10, 1, 5, 9, 2, 8, 4, 6], dtype=float)
    assert conformal_quantile(scores, 0.2) == 9.0  # k = ceil(11 * 0.8) = 9 -> 9th smallest
    assert conformal_quantile(scores, 0.5) == 6.0  # k = ceil(5.5) = 6
    assert math.isinf(conformal_quantile(scores, 0.05))  # k = ceil(10.45) = 11 > n


def test_cqr_scores_and_adjust():
    s = cqr_scores([0.0, 2.0, -1.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(s, [-1.0, 1.0, 0.0])  # inside by 1, above by 1, on the lower edge
    lo, hi = cqr_adjust([0.0, 1.0], [2.0, 3.0], 0.5)
    np.testing.assert_allclose(lo, [-0.5, 0.5])
    np.testing.assert_allclose(hi, [2.5, 3.5])
    lo, hi = cqr_adjust([0.0], [2.0], -0.25)  # a negative margin narrows an over-wide interval
    np.testing.assert_allclose([lo[0], hi[0]], [0.25, 1.75])


def test_rearrangement_removes_crossing():
    q = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 2.0, 1.0]])
    assert crossing_rate(q) == pytest.approx(2 / 3)
    r = rearrange(q)
    np.testing.assert_allclose(r, [[1, 2, 3], [1, 2, 3], [1, 2, 2]])
    assert crossing_rate(r) == 0.0
    # sorting never increases the pinball loss (Chernozhukov et al.): here it strictly lowers it
    y, taus = np.array([1.5, 2.5, 2.0]), [0.1, 0.5, 0.9]
    assert mean_pinball(y, r, taus) < mean_pinball(y, q, taus)


def test_quantile_pairs_and_errors():
    assert quantile_pairs([0.05, 0.25, 0.5, 0.75, 0.95]) == [(0, 4, 0.1), (1, 3, 0.5)]
    for bad, msg in (([0.0, 0.5, 1.0], "strictly between"), ([0.1, 0.5], "no symmetric partner"),
                     ([0.05, 0.5, 0.95, 0.99], "symmetric pairs"), ([0.95, 0.05], "increasing"), ([0.5], "pair")):
        with pytest.raises(SpecError, match=msg):
            quantile_pairs(bad)


def test_cqr_by_hand():
    # one pair (0.25, 0.75) -> alpha 0.5; scores of rows: -1 (inside), 2 (above), 1 (below)
    q_cal = np.array([[-1.0, 0.0, 1.0]] * 3)
    cq = ConformalQuantiles([0.25, 0.5, 0.75]).fit(q_cal, np.array([0.0, 3.0, -2.0]))
    assert cq.margins_ == {0.5: 1.0}  # k = ceil(4 * 0.5) = 2 -> sorted [-1, 1, 2][1]
    np.testing.assert_allclose(cq.transform(np.array([[-1.0, 0.0, 1.0]])), [[-2.0, 0.0, 2.0]])
    # crossed raw quantiles are rearranged before the margin is applied
    np.testing.assert_allclose(cq.transform(np.array([[1.0, 0.0, -1.0]])), [[-2.0, 0.0, 2.0]])
    assert list(cq.intervals(np.array([[-2.0, 0.0, 2.0]]))) == [0.5]


def test_cqr_restores_coverage_of_a_miscalibrated_pair():
    rng = np.random.default_rng(0)
    y_cal, y_test = rng.normal(size=2000), rng.normal(size=20000)
    too_narrow = lambda n: np.tile([-0.5, 0.0, 0.5], (n, 1))  # nominal 90 %, true ~38 %
    cq = ConformalQuantiles([0.05, 0.5, 0.95]).fit(too_narrow(2000), y_cal)
    q = cq.transform(too_narrow(20000))
    cov = np.mean((y_test >= q[:, 0]) & (y_test <= q[:, 2]))
    assert 0.88 <= cov <= 0.92
    assert cq.margins_[0.1] == pytest.approx(1.645 - 0.5, abs=0.08)


def test_aci_update_by_hand():
    cal = np.array([0.0, 1.0, 2.0, 3.0])
    zeros = np.zeros(3)
    y = np.array([5.0, 0.0, 5.0])
    # alpha_0 = 0.5 -> k = ceil(5 * 0.5) = 3 -> margin 2; miss at t=0 -> alpha_1 = 0.5 + 0.3 * (0.5 - 1) = 0.35
    # -> k = ceil(5 * 0.65) = 4 -> margin 3; covered at t=1 -> alpha_2 = 0.35 + 0.3 * 0.5 = 0.5 -> margin 2
    lo, hi, a = aci_intervals(zeros, zeros, y, cal, alpha=0.5, gamma=0.3, delay=1)
    np.testing.assert_allclose(a, [0.5, 0.35, 0.5])
    np.testing.assert_allclose(lo, [-2.0, -3.0, -2.0])
    np.testing.assert_allclose(hi, [2.0, 3.0, 2.0])
    # with a 2-bar label delay the miss at t=0 is only known at t=2
    _, _, a = aci_intervals(zeros, zeros, y, cal, alpha=0.5, gamma=0.3, delay=2)
    np.testing.assert_allclose(a, [0.5, 0.5, 0.35])
