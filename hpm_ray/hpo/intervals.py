"""Which interval ships per horizon: split CQR, ACI or conformal PID, and its step size, chosen on the calibration block.

Every method starts from scores of an earlier block (``past``) and produces intervals along a later one
(``target``) whose labels arrive ``horizon`` rows late. The choice runs each candidate from the first half of
the calibration block over its second half and keeps the lowest mean interval score (a proper score: it
rewards coverage and narrowness together); the chosen candidate then runs from the whole calibration block
over the test block. The test block is never looked at. PID tracks one quantile per volatility tercile when
``groups`` are given (Mondrian conformal, Vovk et al. 2003, applied to quantile tracking), so each tercile's
own misses steer its own margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hpm_ray.errors import DataError
from hpm_ray.hpo.conformal import aci_intervals, conformal_quantile, cqr_scores
from hpm_ray.hpo.online import Integrator, check_step, check_vol, pid_intervals, saturation_constant, start_quantile
from hpm_ray.metrics import interval_score

METHODS = ("cqr", "aci", "pid")
MIN_GROUP_ROWS = 50  # a tercile with fewer past rows starts from the pooled quantile


@dataclass(frozen=True)
class Block:
    """Raw (sorted) interval ends, labels, volatility known at each row (or None) and tercile of each row."""

    lo: np.ndarray
    hi: np.ndarray
    y: np.ndarray
    vol: np.ndarray | None = None
    groups: np.ndarray | None = None

    def rows(self, idx: slice) -> Block:
        pick = lambda a: None if a is None else np.asarray(a)[idx]
        return Block(self.lo[idx], self.hi[idx], self.y[idx], pick(self.vol), pick(self.groups))


@dataclass(frozen=True)
class Settings:
    """How PID runs: scores divided by ``vol`` (``normalize``), one tracker per group, the integrator term."""

    normalize: bool = False
    by_group: bool = True
    integrator: bool = False


@dataclass(frozen=True)
class IntervalPlan:
    """How the shipped interval is chosen, and the volatility and its tercile at each calibration and test row."""

    methods: tuple[str, ...]
    steps: tuple[float, ...]
    settings: Settings
    vol_cal: np.ndarray
    vol_test: np.ndarray
    groups_cal: np.ndarray
    groups_test: np.ndarray
    vol_feature: str | None = None  # the model input the volatility is read from when the model is served
    vol_cuts: tuple[float, ...] = ()  # its terciles on the training block: ``groups_* = digitize(vol, cuts)``


@dataclass
class Choice:
    """The chosen (method, step) and every candidate's calibration interval score, for the summary."""

    method: str
    step: float | None
    candidates: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.method if self.step is None else f"{self.method}(step={self.step:g})"


def intervals(
    method: str,
    step: float | None,
    past: Block,
    target: Block,
    alpha: float,
    horizon: int,
    settings: Settings = Settings(),
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of ``method`` along ``target``, calibrated on ``past`` (whose labels are all known at its start).

    ``step`` is ACI's gamma, or PID's learning rate as a fraction of the largest past score.
    """
    scores = cqr_scores(past.y, past.lo, past.hi)
    if method == "cqr":
        m = conformal_quantile(scores, alpha)
        return target.lo - m, target.hi + m
    step = check_step(step)
    if method == "aci":
        lo, hi, _ = aci_intervals(target.lo, target.hi, target.y, scores, alpha, step, delay=horizon)
        return lo, hi
    if method != "pid":
        raise ValueError(f"unknown interval method {method!r}; use one of {', '.join(METHODS)}")
    vol_t = check_vol(target.vol, len(target.y), "interval_vol") if settings.normalize else None
    groups, n_groups = None, None
    if settings.by_group and target.groups is not None and past.groups is not None:
        groups = np.asarray(target.groups, dtype=int)
        n_groups = max(int(groups.max(initial=0)), int(np.max(past.groups, initial=0))) + 1
    start = pid_start(past, alpha, step, settings, n_groups)
    integ = Integrator(start.scale, saturation_constant(max(len(target.y), 2))) if settings.integrator else None
    r = pid_intervals(target.lo, target.hi, target.y, alpha, horizon, start.eta, start.q0, vol_t, integ, groups)
    return r.lo, r.hi


@dataclass(frozen=True)
class PIDStart:
    """Where PID starts after ``past``: the step in score units, the start quantile (one per group, or pooled),
    and the largest past score (the scale of the step and of the integrator)."""

    eta: float
    q0: float | np.ndarray
    scale: float


def pid_start(past: Block, alpha: float, step: float, settings: Settings, n_groups: int | None = None) -> PIDStart:
    """PID's start from ``past`` (labels all known): ``step`` times the largest score, and the split-conformal
    quantile of the scores, per group when ``n_groups`` is given (a group with fewer than ``MIN_GROUP_ROWS`` past
    rows starts from the pooled one). What the backtest on test and a served forecaster both start from."""
    scores = cqr_scores(past.y, past.lo, past.hi)
    if settings.normalize:
        scores = scores / check_vol(past.vol, len(past.y), "interval_vol")
    scale = float(np.max(np.abs(scores)))
    q0: float | np.ndarray = start_quantile(scores, alpha)
    if n_groups is not None and past.groups is not None:
        q0 = np.array(
            [
                start_quantile(scores[past.groups == k], alpha) if np.sum(past.groups == k) >= MIN_GROUP_ROWS else q0
                for k in range(n_groups)
            ]
        )
    return PIDStart(check_step(step) * scale, q0, scale)


def candidates(methods: tuple[str, ...], steps: list[float]) -> list[tuple[str, float | None]]:
    """(method, step) pairs: split CQR has no step, ACI and PID one candidate per step size."""
    return [(m, None) for m in methods if m == "cqr"] + [(m, s) for m in methods if m != "cqr" for s in steps]


def min_calibration_rows(horizon: int) -> int:
    """Rows a calibration block needs for a choice: two halves, each over twice the label delay after the purge."""
    return 6 * horizon


def choose(
    cal_pairs: dict[float, Block],
    horizon: int,
    methods: tuple[str, ...],
    steps: list[float],
    settings: Settings = Settings(),
) -> Choice:
    """The candidate with the lowest mean interval score (averaged over pairs) on the calibration block's second half.

    ``cal_pairs`` maps each pair's alpha to its calibration block. The first half, less its last ``horizon`` rows
    (their labels are not known when the second half starts), is the past. A single candidate is returned as
    is; otherwise DataError when the block has fewer than ``min_calibration_rows(horizon)`` rows.

    Examples
    --------
    >>> z, y = np.zeros(600), np.random.default_rng(0).normal(size=600)
    >>> choose({0.1: Block(z - 1.645, z + 1.645, y)}, 5, ("cqr", "pid"), [0.01]).method in ("cqr", "pid")
    True
    """
    cands = candidates(methods, steps)
    if len(cands) == 1:
        return Choice(*cands[0])
    n = len(next(iter(cal_pairs.values())).y)
    half = n // 2
    if n < min_calibration_rows(horizon):
        raise DataError(
            f"the calibration block has {n} rows, too few to choose an interval method for horizon "
            f"{horizon} (needs {min_calibration_rows(horizon)}); use more data or one method and step"
        )
    scored = {}
    for method, step in cands:
        total = 0.0
        for alpha, blk in cal_pairs.items():
            lo, hi = intervals(
                method, step, blk.rows(slice(0, half - horizon)), blk.rows(slice(half, n)), alpha, horizon, settings
            )
            total += interval_score(blk.y[half:], lo, hi, alpha)
        scored[Choice(method, step).label] = (total / len(cal_pairs), method, step)
    best = min(scored.values(), key=lambda v: v[0] if math.isfinite(v[0]) else math.inf)
    return Choice(best[1], best[2], {k: v[0] for k, v in scored.items()})
