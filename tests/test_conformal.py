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
    for bad, msg in (
        ([0.0, 0.5, 1.0], "strictly between"),
        ([0.1, 0.5], "no symmetric partner"),
        ([0.05, 0.5, 0.95, 0.99], "symmetric pairs"),
        ([0.95, 0.05], "increasing"),
        ([0.5], "pair"),
    ):
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


# --- online multi-step calibration: conformal PID (hpm_ray.hpo.online) and the method choice ----------------


def test_pid_quantile_tracking_by_hand_with_a_two_bar_delay():
    from hpm_ray.hpo.online import pid_intervals

    z = np.zeros(5)
    y = np.array([3.0, 0.0, 0.0, 3.0, 0.0])  # scores |y| against a zero-width interval
    # t0: q=1, miss (3 > 1). t1: q=1 (no label known yet). t2: row 0's miss arrives: 1 + 1 * (1 - 0.2) = 1.8.
    # t3: row 1 covered: 1.8 - 0.2 = 1.6; its score 3 > 1.6 misses. t4: row 2 covered: 1.4.
    r = pid_intervals(z, z, y, alpha=0.2, delay=2, eta=1.0, q0=1.0)
    np.testing.assert_allclose(r.q, [1.0, 1.0, 1.8, 1.6, 1.4])
    np.testing.assert_allclose(r.hi, r.q)
    np.testing.assert_allclose(r.lo, -r.q)
    assert r.missed.tolist() == [True, False, False, True, False]
    # scores divided by a volatility known at t: row 3's score is 3 / 2 = 1.5 <= 1.6, so it is covered, and the
    # margin is q * vol: [-3.2, 3.2]; the margin is not limited to the calibration scores' range
    r = pid_intervals(z, z, y, alpha=0.2, delay=2, eta=1.0, q0=1.0, vol=np.array([1.0, 2.0, 1.0, 2.0, 1.0]))
    assert r.missed.tolist() == [True, False, False, False, False]
    np.testing.assert_allclose(r.hi, [1.0, 2.0, 1.8, 3.2, 1.4])


def test_pid_tracks_one_quantile_per_group_by_hand():
    from hpm_ray.hpo.online import pid_intervals

    z = np.zeros(4)
    # groups 0, 1, 0, 1: row 0's miss moves only group 0 (1 -> 1.5), row 1's hit only group 1 (1 -> 0.5)
    r = pid_intervals(
        z,
        z,
        np.array([2.0, 0.0, 0.0, 0.0]),
        alpha=0.5,
        delay=1,
        eta=1.0,
        q0=np.array([1.0, 1.0]),
        groups=np.array([0, 1, 0, 1]),
    )
    np.testing.assert_allclose(r.q, [1.0, 1.0, 1.5, 0.5])


def test_pid_integrator_by_hand():
    from hpm_ray.hpo.online import Integrator, pid_intervals, saturation_constant

    # pure I term (eta = 0, q0 = 0, k_i = 1, c_sat = 1): q_t = tan(S log n / n) over the n known rows
    y, z = np.ones(7), np.zeros(7)
    r = pid_intervals(z, z, y, alpha=0.5, delay=1, eta=0.0, q0=0.0, integrator=Integrator(1.0, 1.0))
    expected = [
        0.0,
        0.0,
        math.tan(1.0 * math.log(2) / 2),
        math.tan(1.5 * math.log(3) / 3),
        math.tan(2.0 * math.log(4) / 4),
        math.tan(2.5 * math.log(5) / 5),
    ]
    np.testing.assert_allclose(r.q[:6], expected)
    assert r.missed[:5].all() and not r.missed[5]  # tan(0.805) = 1.04 >= the score 1
    assert r.q[6] == pytest.approx(math.tan(2.0 * math.log(6) / 6))  # row 5's hit pulls S back to 2
    # saturation: past pi/2 the integrator is infinite, the interval too, and it covers
    r = pid_intervals(z, z, y, alpha=0.5, delay=1, eta=0.0, q0=0.0, integrator=Integrator(1.0, 0.1))
    assert math.isinf(r.q[2]) and r.hi[2] == math.inf and not r.missed[2]
    assert saturation_constant(3000) == pytest.approx(2 / math.pi * (1 - 1 / math.log(3000)))


def _random_block(n: int, seed: int):
    from hpm_ray.hpo.intervals import Block

    rng = np.random.default_rng(seed)
    vol = np.exp(rng.normal(size=n) * 0.3)
    lo, hi = -vol + 0.1 * rng.normal(size=n), vol + 0.1 * rng.normal(size=n)
    return Block(lo, hi, rng.normal(size=n) * vol * 1.3, vol, rng.integers(0, 3, size=n))


@pytest.mark.parametrize("method, step", [("pid", 0.05), ("aci", 0.05)])
@pytest.mark.parametrize("normalize, integrator", [(False, False), (True, True)])
def test_no_interval_moves_when_later_labels_change(method, step, normalize, integrator):
    from dataclasses import replace

    from hpm_ray.hpo.intervals import Settings, intervals

    h, past, target = 7, _random_block(300, 0), _random_block(200, 1)
    st = Settings(normalize=normalize, by_group=True, integrator=integrator)
    lo, hi = intervals(method, step, past, target, 0.1, h, st)
    rng = np.random.default_rng(2)
    for t in (0, 6, 7, 50, 120, 199):
        y2 = target.y.copy()
        y2[max(t - h + 1, 0) :] = rng.normal(size=len(y2) - max(t - h + 1, 0)) * 5  # every label of rows > t - h
        lo2, hi2 = intervals(method, step, past, replace(target, y=y2), 0.1, h, st)
        np.testing.assert_array_equal(lo[: t + 1], lo2[: t + 1])
        np.testing.assert_array_equal(hi[: t + 1], hi2[: t + 1])
    # and a label does matter once it is known: flipping row 0 from hit to miss (or back) moves the interval
    # of the first later row it steers (PID: the next row of row 0's volatility group from row h on)
    y3 = target.y.copy()
    y3[0] = 50.0 if lo[0] <= y3[0] <= hi[0] else (lo[0] + hi[0]) / 2
    lo3, _ = intervals(method, step, past, replace(target, y=y3), 0.1, h, st)
    k = h if method == "aci" else h + int(np.flatnonzero(target.groups[h:] == target.groups[0])[0])
    np.testing.assert_array_equal(lo3[:k], lo[:k])
    assert lo3[k] != lo[k]


def test_pid_update_by_hand():
    """The one update the backtest and the served forecaster share: err = 1{score > the row's served margin}."""
    from hpm_ray.hpo.online import Integrator, PIDState, pid_margin, pid_update

    s = PIDState(0.3)
    s = pid_update(s, score=0.5, margin=0.3, alpha=0.1, eta=0.02)  # a miss: 0.3 + 0.02 * 0.9
    assert (s.p, s.s, s.n) == (pytest.approx(0.318), pytest.approx(0.9), 1)
    s = pid_update(s, score=0.3, margin=0.318, alpha=0.1, eta=0.02)  # a hit: 0.318 - 0.02 * 0.1
    assert (s.p, s.s, s.n) == (pytest.approx(0.316), pytest.approx(0.8), 2)
    s = pid_update(s, score=0.316, margin=0.316, alpha=0.1, eta=0.02)  # on the edge: covered
    assert s.p == pytest.approx(0.314)
    assert pid_margin(s) == s.p
    # with the integrator: p + k_i tan(S log n / (n c_sat)) = 0.314 + 2 tan(0.7 log 3 / 3)
    assert pid_margin(s, Integrator(2.0, 1.0)) == pytest.approx(0.314 + 2 * math.tan(0.7 * math.log(3) / 3))


def test_the_served_calibration_starts_where_the_backtest_on_test_starts():
    """``online_calibration`` records PID's start after the calibration block (per level and volatility tercile):
    replaying the test block from it gives the backtest's intervals exactly."""
    from hpm_ray.hpo.evaluate import online_calibration
    from hpm_ray.hpo.intervals import Choice, IntervalPlan, Settings, intervals
    from hpm_ray.hpo.online import OnlineCalibration, pid_intervals

    past, target = _random_block(400, 5), _random_block(300, 6)
    cuts = (0.8, 1.2)
    past = type(past)(past.lo, past.hi, past.y, past.vol, np.digitize(past.vol, cuts))
    target = type(target)(target.lo, target.hi, target.y, target.vol, np.digitize(target.vol, cuts))
    for st in (Settings(), Settings(normalize=True, integrator=True), Settings(by_group=False)):
        plan = IntervalPlan(("pid",), (0.02,), st, past.vol, target.vol, past.groups, target.groups, "rv", cuts)
        cal = online_calibration(Choice("pid", 0.02), {0.1: past}, [(0, 2, 0.1)], plan, len(target.y))
        cal = OnlineCalibration.from_dict(cal.to_dict())  # as the MLmodel metadata gives it back
        (lv,) = cal.levels
        assert (lv.key, lv.lo_col, lv.hi_col, cal.vol_cuts) == ("90", 0, 2, cuts if st.by_group else ())
        assert len(lv.q0) == (3 if st.by_group else 1)
        lo, hi = intervals("pid", 0.02, past, target, 0.1, 4, st)
        r = pid_intervals(
            target.lo,
            target.hi,
            target.y,
            lv.alpha,
            4,
            lv.eta,
            np.array(lv.q0),
            target.vol if cal.normalize else None,
            lv.integrator,
            cal.groups(target.vol) if cal.vol_cuts else None,
        )
        np.testing.assert_allclose(r.lo, lo, rtol=0, atol=1e-12)
        np.testing.assert_allclose(r.hi, hi, rtol=0, atol=1e-12)
    no_pid = online_calibration(Choice("cqr", None), {0.1: past}, [(0, 2, 0.1)], plan, 10)
    assert no_pid is None


def test_pid_restores_coverage_after_a_volatility_shift_where_split_cqr_fails():
    from hpm_ray.hpo.intervals import Block, Settings, intervals
    from hpm_ray.metrics import coverage

    rng = np.random.default_rng(3)
    z_cal, z = np.zeros(1000), np.zeros(4000)
    past = Block(z_cal, z_cal, rng.normal(size=1000))
    target = Block(z, z, rng.normal(size=4000) * 3.0)  # volatility triples after calibration
    cqr = coverage(target.y, *intervals("cqr", None, past, target, 0.1, 5))
    pid = coverage(target.y, *intervals("pid", 0.05, past, target, 0.1, 5, Settings(by_group=False)))
    assert cqr < 0.5  # P(|N(0, 9)| <= 1.645) = 0.41
    assert abs(pid - 0.9) < 0.02


def test_choose_keeps_the_lowest_calibration_interval_score_and_never_reads_test():
    from hpm_ray.hpo.intervals import Block, choose

    rng = np.random.default_rng(4)
    n = 1200
    y = np.concatenate([rng.normal(size=n // 2), rng.normal(size=n // 2) * 3])  # a shift inside calibration
    z = np.zeros(n)
    c = choose({0.1: Block(z - 1.645, z + 1.645, y)}, 5, ("cqr", "pid"), [0.001, 0.05])
    assert set(c.candidates) == {"cqr", "pid(step=0.001)", "pid(step=0.05)"}
    assert c.label == min(c.candidates, key=c.candidates.get) == "pid(step=0.05)"
    # a stationary block: static CQR is as good as any tracker, and the narrowest
    c = choose({0.1: Block(z - 1.645, z + 1.645, rng.normal(size=n))}, 5, ("cqr", "pid"), [0.001, 0.05])
    assert c.candidates["pid(step=0.05)"] > c.candidates["cqr"]


def test_online_calibration_bad_input_is_one_line():
    from hpm_ray.errors import DataError
    from hpm_ray.hpo.intervals import Block, Settings, choose, intervals
    from hpm_ray.hpo.online import check_step, check_vol

    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(SpecError, match="step size must lie strictly between 0 and 1"):
            check_step(bad)
    for vol, first in (
        (np.array([1.0, np.nan, 2.0]), "row 1"),
        (np.array([1.0, 2.0, 0.0]), "row 2"),
        (np.array([-1.0, 2.0, 1.0]), "row 0"),
    ):
        with pytest.raises(DataError, match=f"must be positive and finite at every row: 1 row.*{first}") as e:
            check_vol(vol, 3, "interval_vol")
        assert len(str(e.value).splitlines()) == 1
    blk = _random_block(50, 0)
    with pytest.raises(DataError, match="interval_vol"):  # normalising without a volatility
        intervals("pid", 0.1, Block(blk.lo, blk.hi, blk.y), blk, 0.1, 3, Settings(normalize=True))
    with pytest.raises(DataError, match="too few to choose an interval method for horizon 10 .needs 60"):
        choose({0.1: blk}, 10, ("cqr", "pid"), [0.01])


def test_conditional_coverage_metrics_by_hand():
    from hpm_ray.metrics import group_coverage, interval_score, longest_miss_run, rolling_coverage, tercile_cuts

    y = np.array([0.0, 2.0, 3.0, 0.5, -4.0, 0.0])
    lo, hi = -np.ones(6), np.ones(6)  # misses at rows 1, 2, 4
    # width 2 + (2 / 0.5) x distance outside (1, 2 and 3 beyond an end): (6 x 2 + 4 x 6) / 6
    assert interval_score(y, lo, hi, 0.5) == pytest.approx((12 + 24) / 6)
    assert longest_miss_run(y, lo, hi) == 2
    np.testing.assert_allclose(rolling_coverage(y, lo, hi, 3), [1 / 3, 1 / 3, 1 / 3, 2 / 3])
    assert group_coverage(y, lo, hi, np.array([0, 0, 1, 1, 1, 1]), 3) == [0.5, 0.5, None]
    np.testing.assert_allclose(tercile_cuts(np.array([1.0, 2.0, 3.0, 4.0, np.nan])), [2.0, 3.0])


def test_pid_groups_absent_from_the_block_keep_their_start():
    from hpm_ray.hpo.online import pid_intervals

    z = np.zeros(3)  # three groups start, only group 0 occurs: its own quantile is used and moved
    r = pid_intervals(
        z,
        z,
        np.array([5.0, 0.0, 0.0]),
        alpha=0.5,
        delay=1,
        eta=1.0,
        q0=np.array([1.0, 7.0, 9.0]),
        groups=np.zeros(3, dtype=int),
    )
    np.testing.assert_allclose(r.q, [1.0, 1.5, 1.0])
