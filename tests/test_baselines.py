"""Baselines of the HPO report and the Diebold-Mariano test, against hand-computed values and by simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("statsmodels")
pytest.importorskip("arch")

from hpm_ray.data import volstate as vs
from hpm_ray.errors import DataError
from hpm_ray.hpo import baselines as bl
from hpm_ray.metrics import mean_pinball, pinball_rows

QS = [0.05, 0.5, 0.95]


def _bars(n: int, seed: int = 0) -> pd.DataFrame:
    """Hourly closes whose volatility wanders (a slow random walk in log volatility)."""
    rng = np.random.default_rng(seed)
    vol = 0.01 * np.exp(np.cumsum(rng.normal(0, 0.03, n)))
    close = 100 * np.exp(np.cumsum(rng.normal(size=n) * vol))
    return pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"), "close": close})


def _state_frame(r: np.ndarray) -> pd.DataFrame:
    """Feature rows as the baselines read them: the 1-bar return and its volatility states."""
    return pd.DataFrame({"ret_1": r, **vs.volatility_state(r)})


def test_rolling_ewma_har_and_garch_pieces_by_hand():
    y = np.arange(10.0)
    # row 5, h = 2, window 3: the labels known at row 5 are rows <= 3 -> rows 1, 2, 3
    np.testing.assert_allclose(bl.rolling_quantiles(y, np.array([5]), 2, 3, [0.5]), [[2.0]])
    with pytest.raises(DataError, match="no label known"):
        bl.rolling_quantiles(y, np.array([1]), 2, 3, [0.5])
    # EWMA decay 0.5, weights normalised over the finite returns seen: 1, then (4 + 0.5 x 1) / (1 + 0.5) = 3
    np.testing.assert_allclose(vs.ewma_vol(np.array([np.nan, 1.0, 2.0]), 0.5), [np.nan, 1.0, math.sqrt(3.0)])
    np.testing.assert_allclose(bl.forward_rv(np.array([1.0, 2.0, 3.0, 4.0]), 2), [13.0, 25.0, np.nan, np.nan])
    np.testing.assert_allclose(vs.har_rv(np.ones(800))[-1], [24.0, 24.0, 24.0])  # daily-scaled mean of r^2 = 1
    # the first bar's return is missing: row 2 averages (4 + 0) / 2 x 24 = 48 in every window
    np.testing.assert_allclose(vs.har_rv(np.array([np.nan, 2.0, 0.0])), [[np.nan] * 3, [96.0] * 3, [48.0] * 3])
    # the rows' scales: EWMA feature x sqrt(h); HAR coefficients . [1, rv_day, rv_week, rv_month], floored
    rows = pd.DataFrame({"ewma_vol_0.97": [0.01], "rv_day": [2.0], "rv_week": [3.0], "rv_month": [4.0]})
    assert bl.EwmaScale(0.97, 4)(rows)[0] == pytest.approx(0.02)
    assert bl.HarScale((1.0, 1.0, 0.5, 0.25), 0.0)(rows)[0] == pytest.approx(math.sqrt(1 + 2 + 1.5 + 1))
    assert bl.HarScale((-10.0, 1.0, 0.5, 0.25), 0.04)(rows)[0] == pytest.approx(0.2)  # negative OLS fit: the floor


def test_state_features_by_hand_and_known_at_t():
    """The EWMA / HAR states are feature columns of bar t computed from bars <= t: a change after t leaves them."""
    from hpm_ray.data.features import ohlcv_features
    from hpm_ray.data.io import prepare_series

    bars = _bars(900)
    f1 = ohlcv_features(prepare_series(bars, "timestamp", "close"))
    r = np.diff(np.log(bars["close"].to_numpy()))  # r[t - 1] is bar t's return
    assert f1["rv_day"].iloc[850] == pytest.approx(np.mean(r[826:850] ** 2) * 24)
    assert f1["rv_month"].iloc[850] == pytest.approx(np.mean(r[130:850] ** 2) * 24)
    assert f1["rv_month"].iloc[10] == pytest.approx(np.mean(r[:10] ** 2) * 24)  # the bars seen so far
    w = 0.94 ** np.arange(3)[::-1]  # bar 3: returns of bars 1, 2, 3
    assert f1["ewma_vol_0.94"].iloc[3] == pytest.approx(math.sqrt(np.sum(w * r[:3] ** 2) / w.sum()))
    later = bars.copy()
    later.loc[500:, "close"] *= np.exp(np.random.default_rng(1).normal(0, 0.05, 400))
    f2 = ohlcv_features(prepare_series(later, "timestamp", "close"))
    cols = [vs.ewma_column(d) for d in vs.EWMA_DECAYS] + list(vs.HAR_COLUMNS)
    pd.testing.assert_frame_equal(f1[cols].iloc[:500], f2[cols].iloc[:500])
    assert (f1[cols].iloc[500] != f2[cols].iloc[500]).all()
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
    X = _state_frame(r)
    out = {x.name: x for x in bl.baselines(X, y, b, h, qs)}
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
    two = {x.name: x for x in bl.baselines(X, y, bl.Blocks3(b.train, b.validation, b.test, folds), h, qs)}
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


def test_family_is_chosen_on_validation_and_registered_unless_it_cannot_be_served():
    f = bl.choose_family({"lgbm": 0.010, "naive": 0.012, "ewma": 0.011}, "lgbm")
    assert (f.chosen, f.registered) == ("lgbm", "lgbm") and "vs ewma 0.011" in f.reason
    f = bl.choose_family({"lgbm": 0.012, "naive": 0.011, "ewma": 0.0115}, "lgbm")
    assert (f.chosen, f.registered) == ("naive", "naive") and "not the tuned model" in f.reason
    # EWMA and HAR read their state from the feature row: they ship as chosen
    f = bl.choose_family({"lgbm": 0.012, "naive": 0.0125, "ewma": 0.011, "garch": float("nan")}, "lgbm")
    assert (f.chosen, f.registered) == ("ewma", "ewma") and "the baseline ships" in f.reason
    assert bl.choose_family({"lgbm": 0.013, "naive": 0.0125, "har": 0.011}, "lgbm").registered == "har"
    # GARCH and rolling need a state no feature row carries: the best servable family is registered, and it says so
    f = bl.choose_family({"lgbm": 0.013, "naive": 0.0125, "har": 0.012, "garch": 0.011}, "lgbm")
    assert (f.chosen, f.registered) == ("garch", "har") and "GARCH filter" in f.reason and "registered har" in f.reason
    f = bl.choose_family({"lgbm": 0.012, "naive": 0.0125, "rolling": 0.011}, "lgbm")
    assert (f.chosen, f.registered) == ("rolling", "lgbm") and "last N labels" in f.reason
    assert bl.choose_family({"lgbm": 0.01, "naive": 0.01}, "lgbm").chosen == "naive"  # a tie goes to the simpler model
    with pytest.raises(DataError, match="tuned forecaster's validation pinball"):
        bl.choose_family({"naive": 0.01}, "lgbm")


def test_a_registered_scaled_baseline_serves_its_evaluated_forecasts(tmp_path):
    """EWMA and HAR as pyfuncs over the feature rows make_supervised builds, saved and loaded back through MLflow:
    their quantiles on the test rows reproduce the test pinball the evaluation reports, and a single row (the
    latest bar) gets the same forecast as in a batch: the state is in the row."""
    import mlflow

    from hpm_ray.data.features import make_supervised
    from hpm_ray.data.io import prepare_series
    from hpm_ray.hpo.conformal import ConformalQuantiles
    from hpm_ray.hpo.pyfunc import ScaledForecaster

    h = 6
    X, y_s = make_supervised(prepare_series(_bars(2600), "timestamp", "close"), h)
    y = y_s.to_numpy()
    b = bl.Blocks3(np.arange(0, 1500), np.arange(1500 + h, 1900), np.arange(2000, len(X)))
    cal = np.arange(1900 + h, 2000 - h)
    out = {x.name: x for x in bl.baselines(X, y, b, h, QS)}
    assert out["rolling"].model is None and out["garch"].model is None
    for name in ("ewma", "har"):
        base = out[name]
        reported = bl.score_baseline(base, y[b.test], pinball_rows(y[b.test], out["naive"].q_test, QS), h, QS)
        cq = ConformalQuantiles(QS).fit(base.model(X.iloc[cal]), y[cal])
        path = str(tmp_path / name)
        mlflow.pyfunc.save_model(path, python_model=ScaledForecaster(base.model, cq, X, h), pip_requirements=[])
        served = mlflow.pyfunc.load_model(path)
        pred = served.predict(X.iloc[b.test])
        q_cols = [f"q_{t:g}" for t in QS]
        assert mean_pinball(y[b.test], pred[q_cols].to_numpy(), QS) == pytest.approx(
            reported["test_pinball"], rel=1e-12
        )
        latest = served.predict(X.iloc[[-1]])
        pd.testing.assert_frame_equal(latest, pred.iloc[[-1]])
