"""Baselines of the HPO report and the Diebold-Mariano test, against hand-computed values and by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("statsmodels")
pytest.importorskip("arch")

from hpm_ray.errors import DataError
from hpm_ray.hpo import baselines as bl
from hpm_ray.metrics import mean_pinball, pinball_rows


def test_rolling_ewma_har_and_garch_pieces_by_hand():
    y = np.arange(10.0)
    # row 5, h = 2, window 3: the labels known at row 5 are rows <= 3 -> rows 1, 2, 3
    np.testing.assert_allclose(bl.rolling_quantiles(y, np.array([5]), 2, 3, [0.5]), [[2.0]])
    with pytest.raises(DataError, match="no label known"):
        bl.rolling_quantiles(y, np.array([1]), 2, 3, [0.5])
    # EWMA decay 0.5 from r0^2 = 1: 1, then 0.5 * 1 + 0.5 * 4 = 2.5
    np.testing.assert_allclose(bl.ewma_vol(np.array([1.0, 2.0]), 0.5), [1.0, math.sqrt(2.5)])
    np.testing.assert_allclose(bl.forward_rv(np.array([1.0, 2.0, 3.0, 4.0]), 2), [13.0, 25.0, np.nan, np.nan])
    X = bl.har_regressors(np.ones(800))
    np.testing.assert_allclose(X[-1], [1.0, 24.0, 24.0, 24.0])  # daily-scaled mean of r^2 = 1
    np.testing.assert_allclose(bl.har_regressors(np.array([2.0, 0.0]))[1], [1.0, 48.0, 48.0, 48.0])  # (4 + 0) / 2 x 24
    # GARCH: phi = 0.9, long-run 10; from sigma2_{t+1} = 20: 20 + (10 + 0.9 x 10) = 39 over two bars
    assert bl.garch_h_variance(np.array([20.0]), 1.0, 0.1, 0.8, 2)[0] == pytest.approx(39.0)
    assert bl.garch_h_variance(np.array([20.0]), 1.0, 0.2, 0.8, 2)[0] == pytest.approx(41.0)  # integrated: 20 + 21


def test_garch_scale_tracks_the_true_conditional_volatility():
    rng = np.random.default_rng(0)
    n, omega, alpha, beta = 4000, 0.02, 0.1, 0.85
    r, s2 = np.empty(n), np.empty(n)
    prev = omega / (1 - alpha - beta)
    for t in range(n):
        s2[t] = prev
        r[t] = math.sqrt(prev) * rng.standard_t(6) / math.sqrt(1.5)
        prev = omega + alpha * r[t] ** 2 + beta * prev
    scale = bl.garch_scale(r / 100, 1, np.arange(3000))  # returns in fractions; sigma_{t+1|t} at row t
    assert np.corrcoef(scale[3000:-1], np.sqrt(s2[3001:]) / 100)[0, 1] > 0.95


def test_dm_test_by_hand_and_its_error_rate_by_simulation():
    r = bl.dm_test(np.array([2.0, 1.0, 3.0, 1.0]), np.array([1.0, 2.0, 1.0, 1.0]), 1)
    assert r.stat == pytest.approx(0.5 / math.sqrt(1.25 / 4)) and r.mean_diff == 0.5
    assert r.pvalue == pytest.approx(2 * (1 - 0.8141), abs=1e-3)  # Phi(0.894) = 0.8141
    # overlapping h-step losses: differentials are MA(h-1); under equal accuracy a 5 % test rejects ~5 % of the time
    rng = np.random.default_rng(1)
    h, n, reps = 6, 1500, 400

    def diffs(shift):
        e = rng.normal(size=n + h - 1)
        return np.convolve(e, np.ones(h), "valid") + shift

    null = np.mean([bl.dm_test(diffs(0.0), np.zeros(n), h).pvalue < 0.05 for _ in range(reps)])
    assert 0.02 <= null <= 0.085, null
    # a mean difference of 0.5: the mean's long-run sd is 6 / sqrt(1500) = 0.155, z ~ 3.2, power ~ 0.9
    power = np.mean([bl.dm_test(diffs(-0.5), np.zeros(n), h).pvalue < 0.05 for _ in range(100)])
    assert power > 0.75, power
    assert bl.dm_test(np.ones(20), np.ones(20), 3).pvalue == 1.0  # identical losses
    with pytest.raises(DataError, match="needs more than 13 rows"):
        bl.dm_test(np.ones(10), np.zeros(10), 6)


def test_verdicts_are_plain():
    assert (
        bl.verdict("ewma", 48, bl.DMResult(-0.5, 0.6, -0.1, "uniform"))
        == "no evidence of skill over ewma at h=48 (DM -0.50, p=0.6)"
    )
    assert bl.verdict("ewma", 48, bl.DMResult(-2.5, 0.012, -0.1, "uniform")).startswith("skill over ewma at h=48")
    assert bl.verdict("har", 6, bl.DMResult(3.1, 0.002, 0.1, "uniform")).startswith(
        "har beats the tuned forecaster at h=6"
    )


def test_baselines_choose_on_validation_and_forecast_test():
    rng = np.random.default_rng(2)
    n, h = 9000, 6
    vol = np.exp(np.cumsum(rng.normal(size=n)) * 0.01)  # slowly wandering volatility
    r = rng.normal(size=n) * vol * 0.01
    y = np.full(n, np.nan)
    y[:-h] = np.convolve(r, np.ones(h), "valid")[1:]  # r_{t+1} + ... + r_{t+h}
    b = bl.Blocks3(np.arange(0, 5000), np.arange(5012, 7000), np.arange(7012, n - h))
    qs = [0.05, 0.5, 0.95]
    out = {x.name: x for x in bl.baselines(r, y, b, h, qs)}
    assert list(out) == ["naive", "rolling", "ewma", "har", "garch"]
    assert out["rolling"].setting in bl.ROLLING_WINDOWS and out["ewma"].setting in bl.EWMA_DECAYS
    shipped = pinball_rows(y[b.test], out["naive"].q_test, qs)
    for base in out.values():
        assert base.q_test.shape == (len(b.test), 3) and np.all(np.diff(base.q_test, axis=1) >= 0)
        e = bl.score_baseline(base, y[b.test], shipped, h, qs)
        assert set(e["test_pinball_by_quantile"]) == {"0.05", "0.5", "0.95"}
        assert e["test_pinball"] == pytest.approx(np.mean(list(e["test_pinball_by_quantile"].values())))
    # volatility-scaled baselines beat the unconditional one when volatility wanders
    pin = {k: bl.score_baseline(v, y[b.test], shipped, h, qs)["test_pinball"] for k, v in out.items()}
    assert pin["ewma"] < pin["naive"] and pin["garch"] < pin["naive"]
    assert all(np.isfinite(v.val_pinball) for v in out.values())
    # with the search's folds: the second fold's naive quantiles come from the rows that fold fits on
    folds = ((b.train, b.validation[:900]), (np.arange(0, 5900), b.validation[1000:]))
    two = {x.name: x for x in bl.baselines(r, y, bl.Blocks3(b.train, b.validation, b.test, folds), h, qs)}
    fold1 = mean_pinball(y[folds[0][1]], bl.naive_quantiles(y[b.train], qs, 900), qs)
    fold2 = mean_pinball(y[folds[1][1]], bl.naive_quantiles(y[:5900], qs, len(folds[1][1])), qs)
    assert two["naive"].val_pinball == pytest.approx((fold1 + fold2) / 2)
    np.testing.assert_allclose(two["naive"].q_test, out["naive"].q_test)  # test forecasts: train + validation


def test_fold_score_by_hand():
    y = np.array([1.0, 3.0, 0.0, 4.0])
    const = {(0, 1): 2.0, (2, 3): 1.0}
    forecast = lambda fit, rows: np.full((len(rows), 1), const[tuple(rows)])
    # fold 1: |1-2|, |3-2| at tau 0.5 -> 0.5 each; fold 2: 0.5 x 1 and 0.5 x 3 -> mean 1.0; folds averaged: 0.75
    folds = ((np.array([], dtype=int), np.array([0, 1])), (np.array([0, 1]), np.array([2, 3])))
    assert bl.fold_score(forecast, y, folds, [0.5]) == pytest.approx(0.75)


def test_family_is_chosen_on_validation_and_only_servable_families_are_registered():
    f = bl.choose_family({"lgbm": 0.010, "naive": 0.012, "ewma": 0.011}, "lgbm")
    assert (f.chosen, f.registered) == ("lgbm", "lgbm") and "vs ewma 0.011" in f.reason
    f = bl.choose_family({"lgbm": 0.012, "naive": 0.011, "ewma": 0.0115}, "lgbm")
    assert (f.chosen, f.registered) == ("naive", "naive") and "not the tuned model" in f.reason
    # the best on validation needs an EWMA state: it cannot be registered; the best servable one is, and it says so
    f = bl.choose_family({"lgbm": 0.012, "naive": 0.0125, "ewma": 0.011, "garch": float("nan")}, "lgbm")
    assert (f.chosen, f.registered) == ("ewma", "lgbm") and "cannot be registered; registered lgbm" in f.reason
    f = bl.choose_family({"lgbm": 0.013, "naive": 0.0125, "har": 0.011}, "lgbm")
    assert (f.chosen, f.registered) == ("har", "naive")
    assert bl.choose_family({"lgbm": 0.01, "naive": 0.01}, "lgbm").chosen == "naive"  # a tie goes to the simpler model
    with pytest.raises(DataError, match="tuned forecaster's validation pinball"):
        bl.choose_family({"naive": 0.01}, "lgbm")
