"""Post-search steps of one horizon: refit the chosen config, calibrate, and score on the untouched test block.

The split is train | validation | calibration | test (purged gaps between). Search saw train + validation,
CQR sees calibration, and only the numbers returned here look at test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray

from hpm_ray.hpo.conformal import ConformalQuantiles, aci_intervals, rearrange
from hpm_ray.hpo.trainable import SearchData, boost, predict_quantiles, train_boosters
from hpm_ray.metrics import coverage, crossing_rate, mean_pinball, mean_width

# LightGBM's own defaults for the searched parameters: the "untuned" baseline.
DEFAULT_CONFIG = dict(learning_rate=0.1, num_leaves=31, max_depth=-1, min_child_samples=20,
                      feature_fraction=1.0, bagging_fraction=1.0, lambda_l1=0.0, lambda_l2=0.0)


@dataclass
class Fitted:
    """Boosters of one config refit on the search block, with their raw calibration and test predictions."""

    boosters: list
    q_cal: np.ndarray
    q_test: np.ndarray


@ray.remote(num_cpus=1)
def refit(config: dict, rounds: int, data: SearchData, search, cal, test, seed: int) -> Fitted:
    """Train one booster per quantile on ``search`` rows for ``rounds`` rounds; predict calibration and test."""
    X, y, s = data.X, data.y, data.scale
    boosters = train_boosters(config, X[search], y[search] / s[search], data.quantiles, seed)
    boost(boosters, rounds)
    return Fitted(boosters, predict_quantiles(boosters, X[cal]) * s[cal, None],
                  predict_quantiles(boosters, X[test]) * s[test, None])


def level_key(level: float) -> str:
    return f"{round(level * 100):d}"


def score_forecasts(q_cal, y_cal, q_test, y_test, quantiles, horizon: int, aci_gamma: float) -> tuple[dict, np.ndarray, ConformalQuantiles]:
    """Calibrate raw quantiles with CQR on the calibration block and score them on test.

    Returns (metrics, calibrated test quantiles, fitted CQR); metrics: coverage/width per interval (CQR, ACI,
    uncalibrated), crossing before and after rearrangement, test pinball of the calibrated quantiles.
    """
    cq = ConformalQuantiles(quantiles).fit(q_cal, y_cal)
    q_final = cq.transform(q_test)
    m = dict(
        test_pinball=mean_pinball(y_test, q_final, quantiles),
        test_pinball_raw=mean_pinball(y_test, rearrange(q_test), quantiles),
        crossing_rate_raw=crossing_rate(q_test),
        crossing_rate=crossing_rate(q_final),
    )
    raw_sorted = rearrange(q_test)
    for (lvl, (lo, hi)), (i, j, a) in zip(cq.intervals(q_final).items(), cq.pairs):
        k = level_key(lvl)
        m[f"coverage_{k}"] = coverage(y_test, lo, hi)
        m[f"mean_width_{k}"] = mean_width(lo, hi)
        m[f"coverage_{k}_raw"] = coverage(y_test, raw_sorted[:, i], raw_sorted[:, j])
        alo, ahi, _ = aci_intervals(raw_sorted[:, i], raw_sorted[:, j], y_test, cq.scores_[a], a, aci_gamma, delay=horizon)
        m[f"coverage_{k}_aci"] = coverage(y_test, alo, ahi)
        m[f"mean_width_{k}_aci"] = mean_width(alo, ahi)
        m[f"cqr_margin_{k}"] = cq.margins_[a]
    return m, q_final, cq


def naive_quantiles(y_train: np.ndarray, quantiles, n: int) -> np.ndarray:
    """The unconditional baseline: training-target quantiles repeated for every row."""
    return np.tile(np.quantile(np.asarray(y_train, dtype=float), quantiles), (n, 1))
