"""Post-search steps of one horizon: refit the chosen config, calibrate, and score on the untouched test block.

The split is train | validation | calibration | test (purged gaps between). Search saw train + validation,
CQR and the choice of the shipped interval method see calibration, and only the numbers returned here look at test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray

from hpm_ray.hpo.conformal import ConformalQuantiles, aci_intervals, rearrange
from hpm_ray.hpo.intervals import Block, Choice, IntervalPlan, choose, intervals, pid_start
from hpm_ray.hpo.learners import QuantileModel
from hpm_ray.hpo.online import Integrator, OnlineCalibration, PIDLevel, saturation_constant
from hpm_ray.hpo.trainable import SearchData
from hpm_ray.metrics import (
    coverage,
    crossing_rate,
    group_coverage,
    group_coverage_se,
    longest_miss_run,
    mean_pinball,
    mean_width,
)


@dataclass
class Fitted:
    """The quantile models of one config refit on the search block, with their raw calibration and test predictions."""

    model: QuantileModel
    q_cal: np.ndarray
    q_test: np.ndarray


@ray.remote(num_cpus=1)
def refit(config: dict, rounds: int, data: SearchData, search, cal, test, seed: int) -> Fitted:
    """Grow the learner's quantile models on ``search`` rows for ``rounds`` rounds; predict calibration and test."""
    X, y, s = data.X, data.y, data.scale
    model = data.learner.start(config, X[search], y[search] / s[search], data.quantiles, seed)
    model.grow(rounds)
    return Fitted(model, model.predict(X[cal]) * s[cal, None], model.predict(X[test]) * s[test, None])


def level_key(level: float) -> str:
    return f"{round(level * 100):d}"


@dataclass
class Scored:
    """Test-block scores of one forecaster.

    ``metrics`` are flat floats (MLflow); ``conditional`` holds the per-volatility-tercile lists; ``q_final`` the
    CQR-calibrated quantiles the registered model serves; ``shipped`` / ``cqr`` the (lo, hi) test intervals per
    level key ("90") of the chosen method and of split CQR; ``online`` what a served model continues PID from
    (None unless PID was chosen).
    """

    metrics: dict[str, float]
    conditional: dict[str, list]
    choice: Choice
    q_final: np.ndarray
    conformal: ConformalQuantiles
    shipped: dict[str, tuple[np.ndarray, np.ndarray]]
    cqr: dict[str, tuple[np.ndarray, np.ndarray]]
    online: OnlineCalibration | None = None


def online_calibration(
    choice: Choice, cal: dict[float, Block], pairs: list, plan: IntervalPlan, n_rows: int
) -> OnlineCalibration | None:
    """PID's start after the whole calibration block, per pair ``(lo column, hi column, alpha)``: the start the
    test block's backtest uses, so a served model continues from where calibration ended. ``n_rows`` (the test
    block's length) sets the integrator's saturation constant as in the backtest. None for ACI and split CQR."""
    if choice.method != "pid":
        return None
    s = plan.settings
    cuts = tuple(plan.vol_cuts) if s.by_group else ()
    n_groups = len(cuts) + 1 if cuts else None
    levels = []
    for i, j, a in pairs:
        st = pid_start(cal[a], a, choice.step, s, n_groups)
        integ = Integrator(st.scale, saturation_constant(max(n_rows, 2))) if s.integrator else None
        q0 = tuple(float(q) for q in np.atleast_1d(st.q0))
        levels.append(PIDLevel(level_key(1.0 - a), i, j, a, st.eta, q0, integ))
    return OnlineCalibration("pid", float(choice.step), tuple(levels), plan.vol_feature, s.normalize, cuts)


def score_forecasts(
    q_cal, y_cal, q_test, y_test, quantiles, horizon: int, aci_gamma: float, plan: IntervalPlan
) -> Scored:
    """Calibrate raw quantiles on the calibration block, choose the shipped interval there, and score on test.

    Metrics per level: coverage, width and longest miss run of the shipped interval (``coverage_90``), of split
    CQR (``_cqr``), of a fixed-step ACI (``_aci``) and uncalibrated (``_raw``); crossing before and after
    rearrangement; test pinball of the CQR-calibrated quantiles.
    """
    cq = ConformalQuantiles(quantiles).fit(q_cal, y_cal)
    q_final = cq.transform(q_test)
    m = dict(
        test_pinball=mean_pinball(y_test, q_final, quantiles),
        test_pinball_raw=mean_pinball(y_test, rearrange(q_test), quantiles),
        crossing_rate_raw=crossing_rate(q_test),
        crossing_rate=crossing_rate(q_final),
    )
    raw_cal, raw_sorted = rearrange(q_cal), rearrange(q_test)
    cal = {a: Block(raw_cal[:, i], raw_cal[:, j], y_cal, plan.vol_cal, plan.groups_cal) for i, j, a in cq.pairs}
    test = {
        a: Block(raw_sorted[:, i], raw_sorted[:, j], y_test, plan.vol_test, plan.groups_test) for i, j, a in cq.pairs
    }
    choice = choose(cal, horizon, plan.methods, list(plan.steps), plan.settings)
    cond, shipped, static = {}, {}, {}
    for (lvl, (lo, hi)), (i, j, a) in zip(cq.intervals(q_final).items(), cq.pairs):
        k = level_key(lvl)
        slo, shi = intervals(choice.method, choice.step, cal[a], test[a], a, horizon, plan.settings)
        shipped[k], static[k] = (slo, shi), (lo, hi)
        for suffix, (a_lo, a_hi) in (("", (slo, shi)), ("_cqr", (lo, hi))):
            m[f"coverage_{k}{suffix}"] = coverage(y_test, a_lo, a_hi)
            m[f"mean_width_{k}{suffix}"] = mean_width(a_lo, a_hi)
            m[f"longest_miss_run_{k}{suffix}"] = float(longest_miss_run(y_test, a_lo, a_hi))
            cond[f"coverage_{k}{suffix}_by_vol_tercile"] = group_coverage(y_test, a_lo, a_hi, plan.groups_test, 3)
        widths = [
            mean_width(slo[plan.groups_test == g], shi[plan.groups_test == g])
            if np.any(plan.groups_test == g)
            else None
            for g in range(3)
        ]
        cond[f"mean_width_{k}_by_vol_tercile"] = widths
        # misses of overlapping h-step targets cluster: the HAC SE says how much a tercile's coverage can tell
        cond[f"coverage_{k}_by_vol_tercile_se"] = group_coverage_se(y_test, slo, shi, plan.groups_test, 3, horizon - 1)
        m[f"coverage_{k}_raw"] = coverage(y_test, raw_sorted[:, i], raw_sorted[:, j])
        alo, ahi, _ = aci_intervals(
            raw_sorted[:, i], raw_sorted[:, j], y_test, cq.scores_[a], a, aci_gamma, delay=horizon
        )
        m[f"coverage_{k}_aci"] = coverage(y_test, alo, ahi)
        cond[f"coverage_{k}_aci_by_vol_tercile"] = group_coverage(y_test, alo, ahi, plan.groups_test, 3)
        m[f"mean_width_{k}_aci"] = mean_width(alo, ahi)
        m[f"cqr_margin_{k}"] = cq.margins_[a]
    online = online_calibration(choice, cal, cq.pairs, plan, len(y_test))
    return Scored(m, cond, choice, q_final, cq, shipped, static, online)
