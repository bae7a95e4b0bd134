"""Online calibration of h-step intervals whose labels arrive h bars late: conformal PID control.

Conformal PID control (Angelopoulos, Candes & Tibshirani 2023, "Conformal PID control for time series
prediction", NeurIPS 36, arXiv:2307.16895) tracks the ``1 - alpha`` quantile of the conformity score in the
score's own units by online gradient descent on the pinball loss (the P term, "quantile tracking"):
``q <- q + eta (err - alpha)``, ``err = 1{s > q}``. Unlike ACI (Gibbs & Candes 2021), which moves the level and
reads the margin off the calibration scores, the margin is not confined to the calibration block's score range,
so it keeps up when volatility leaves that range. The optional integrator (the I term) adds
``r_t(sum of err - alpha) = k_i tan(x log t / (t c_sat))``, infinite once ``|x log t / (t c_sat)| >= pi / 2``,
which is what bounds the coverage error at every t (their Proposition 2). The scorecaster (the D term) is
not implemented.

With an h-step target the label of row t is known only at row t + h, so the update at row t uses the miss of
row t - h, as in the multi-step form of Wang & Hyndman's ``conformalForecast::pid``:
``q_{t+h|t} = q_{t+h-1|t-1} + eta (err_{t|t-h} - alpha)``. Scores may be divided by a volatility known at t
(``vol``): the margin is then ``q_t * vol_t``, wide in turbulent bars and narrow in calm ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hpm_ray.errors import DataError, SpecError
from hpm_ray.hpo.conformal import conformal_quantile, cqr_scores

METADATA_KEY = "hpm_ray_online"  # where OnlineCalibration.to_dict() sits in a registered forecaster's MLmodel


@dataclass(frozen=True)
class Integrator:
    """The PID integrator ``r_t(x) = k_i tan(x log t / (t c_sat))``; ``k_i`` is in score units."""

    k_i: float
    c_sat: float

    def __call__(self, x: float, t: int) -> float:
        if t < 2:
            return 0.0  # log 1 = 0: nothing to integrate yet
        arg = x * math.log(t) / (t * self.c_sat)
        if abs(arg) >= math.pi / 2:
            return math.copysign(math.inf, arg)
        return self.k_i * math.tan(arg)


def saturation_constant(n_rows: int, delta: float = 0.01) -> float:
    """``c_sat = 2/pi (ceil(log(T) delta) - 1/log(T))``: coverage >= 1 - alpha - delta by row T (the paper's choice)."""
    if n_rows < 2:
        raise SpecError("the PID integrator needs a horizon of at least 2 rows")
    lt = math.log(n_rows)
    return 2 / math.pi * (math.ceil(lt * delta) - 1 / lt)


def check_step(step: float) -> float:
    if not (isinstance(step, (int, float)) and 0.0 < step < 1.0):
        raise SpecError(f"step size must lie strictly between 0 and 1, got {step!r}")
    return float(step)


def check_vol(vol: np.ndarray | None, n: int, name: str = "volatility") -> np.ndarray:
    """The per-row volatility as floats. Refuses a missing one, and non-finite or non-positive values."""
    if vol is None:
        raise DataError(f"{name}: no volatility given to normalise the scores by")
    v = np.asarray(vol, dtype=float)
    if v.shape != (n,):
        raise DataError(f"{name}: expected {n} values, got shape {v.shape}")
    bad = ~(np.isfinite(v) & (v > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name} must be positive and finite at every row: {int(bad.sum())} row(s) are not "
            f"(first at row {i}: {v[i]!r})"
        )
    return v


@dataclass(frozen=True)
class PIDState:
    """One tracker: ``p = q0 + eta * s`` (the P term), ``s`` the sum of ``err - alpha`` and ``n`` the labels seen
    (the integrator's arguments)."""

    p: float
    s: float = 0.0
    n: int = 0


def pid_update(state: PIDState, score: float, margin: float, alpha: float, eta: float) -> PIDState:
    """The tracker after one matured label: ``err = 1{score > margin}``, ``margin`` being the one the labelled
    row's interval was served with; ``p += eta (err - alpha)``. The one update both the backtest
    (:func:`pid_intervals`) and serving (:mod:`hpm_ray.serving.online`) apply.

    Examples
    --------
    >>> pid_update(PIDState(1.0), score=2.0, margin=1.0, alpha=0.1, eta=0.5)  # a miss: p rises by 0.5 * 0.9
    PIDState(p=1.45, s=0.9, n=1)
    """
    e = float(score > margin) - alpha
    return PIDState(state.p + eta * e, state.s + e, state.n + 1)


def pid_margin(state: PIDState, integrator: Integrator | None = None) -> float:
    """The margin ``q = p + r(s, n)`` a row is served with (score units; times the row's volatility when normalised)."""
    return state.p + (integrator(state.s, state.n) if integrator is not None else 0.0)


@dataclass
class OnlineIntervals:
    """The interval of every row and the state that produced it (``q`` in score units, before ``* vol``)."""

    lo: np.ndarray
    hi: np.ndarray
    q: np.ndarray
    missed: np.ndarray


def pid_intervals(
    lo: np.ndarray,
    hi: np.ndarray,
    y: np.ndarray,
    alpha: float,
    delay: int,
    eta: float,
    q0: float | np.ndarray,
    vol: np.ndarray | None = None,
    integrator: Integrator | None = None,
    groups: np.ndarray | None = None,
) -> OnlineIntervals:
    """Conformal PID (P, optionally I) along a time-ordered block; row t's label is used from row t + ``delay`` on.

    ``eta`` is the step in score units, ``q0`` the starting quantile (e.g. the split-conformal one of an earlier
    block). Row t's interval is ``[lo_t - q_t v_t, hi_t + q_t v_t]`` with ``q_t = p_t + r(S_t, n_t)``, where
    ``p_t = q0 + eta * S_t``, ``S_t`` is the sum of ``err_i - alpha`` over the ``n_t`` rows ``i <= t - delay``, and
    ``err_i = 1{s_i > q_i}``, ``s_i = max(lo_i - y_i, y_i - hi_i) / v_i``. With ``groups`` (an integer per row,
    known at t) each group keeps its own p, S and n, started at ``q0[group]``, and only its rows' misses move it.
    Nothing at row t reads ``y`` beyond row t - delay.

    Examples
    --------
    >>> r = pid_intervals(np.zeros(3), np.zeros(3), np.array([2.0, 0.0, 0.0]), alpha=0.5, delay=1, eta=1.0, q0=1.0)
    >>> r.q.tolist()  # row 0 missed (score 2 > 1): q rises by 1 * (1 - 0.5); row 1 covered: falls by 0.5
    [1.0, 1.5, 1.0]
    """
    lo, hi, y = (np.asarray(a, dtype=float) for a in (lo, hi, y))
    n = len(y)
    v = np.ones(n) if vol is None else check_vol(vol, n)
    if delay < 1:
        raise SpecError(f"the label delay must be at least 1 row, got {delay}")
    scores = cqr_scores(y, lo, hi) / v
    out_lo, out_hi, qs = np.empty(n), np.empty(n), np.empty(n)
    g = np.zeros(n, dtype=int) if groups is None else np.asarray(groups, dtype=int)
    q0s = np.atleast_1d(np.asarray(q0, dtype=float))
    n_groups = max(int(g.max(initial=0)) + 1, len(q0s))
    trackers = [PIDState(float(q)) for q in np.broadcast_to(q0s, (n_groups,))]
    for t in range(n):
        if t >= delay:
            k = g[t - delay]
            trackers[k] = pid_update(trackers[k], scores[t - delay], qs[t - delay], alpha, eta)
        q = pid_margin(trackers[g[t]], integrator)
        qs[t] = q
        out_lo[t], out_hi[t] = lo[t] - q * v[t], hi[t] + q * v[t]
    return OnlineIntervals(out_lo, out_hi, qs, scores > qs)


def start_quantile(cal_scores: np.ndarray, alpha: float) -> float:
    """The split-conformal quantile of earlier scores, or their maximum when they are too few for ``alpha``."""
    q = conformal_quantile(cal_scores, alpha)
    return float(np.max(cal_scores)) if math.isinf(q) else q


# --- what a registered forecaster carries to continue PID where its calibration block ended ---------------


@dataclass(frozen=True)
class PIDLevel:
    """One central interval: ``key`` ("90"), its quantile columns, ``alpha``, the step ``eta`` in score units, the
    start quantile of each volatility group (one: pooled) and the integrator (None: the P term alone)."""

    key: str
    lo_col: int
    hi_col: int
    alpha: float
    eta: float
    q0: tuple[float, ...]
    integrator: Integrator | None = None


@dataclass(frozen=True)
class OnlineCalibration:
    """PID as the calibration block chose it (``step``: a fraction of the largest calibration score), per level.

    ``vol_feature`` names the model input known at t that normalises the scores (``normalize``) and, cut at
    ``vol_cuts`` (training-block terciles), picks each row's tracker; no cuts: one tracker per level.

    Examples
    --------
    >>> cal = OnlineCalibration("pid", 0.01, (PIDLevel("90", 0, 2, 0.1, 0.02, (1.0, 2.0, 3.0)),), "rv", False, (0.1, 0.2))
    >>> cal.groups(np.array([0.05, 0.15, 0.5])).tolist(), cal.start()["90"][2]
    ([0, 1, 2], PIDState(p=3.0, s=0.0, n=0))
    >>> OnlineCalibration.from_dict(cal.to_dict()) == cal
    True
    """

    method: str
    step: float
    levels: tuple[PIDLevel, ...]
    vol_feature: str | None = None
    normalize: bool = False
    vol_cuts: tuple[float, ...] = field(default=())

    def groups(self, vol: np.ndarray) -> np.ndarray:
        """Each row's tracker: its volatility's tercile, or 0 for all without cuts."""
        v = np.asarray(vol, dtype=float)
        return np.digitize(v, self.vol_cuts) if self.vol_cuts else np.zeros(len(v), dtype=int)

    def start(self) -> dict[str, list[PIDState]]:
        """The trackers as the calibration block left them: one per group, at its start quantile."""
        n_groups = len(self.vol_cuts) + 1 if self.vol_cuts else 1
        return {
            lv.key: [PIDState(lv.q0[k] if k < len(lv.q0) else lv.q0[0]) for k in range(n_groups)] for lv in self.levels
        }

    def to_dict(self) -> dict:
        """Plain lists, floats and strings: what the MLmodel file's YAML metadata holds."""
        return {
            "method": self.method,
            "step": float(self.step),
            "vol_feature": self.vol_feature,
            "normalize": bool(self.normalize),
            "vol_cuts": [float(c) for c in self.vol_cuts],
            "levels": [
                {
                    "key": lv.key,
                    "lo_col": int(lv.lo_col),
                    "hi_col": int(lv.hi_col),
                    "alpha": float(lv.alpha),
                    "eta": float(lv.eta),
                    "q0": [float(q) for q in lv.q0],
                    "integrator": None
                    if lv.integrator is None
                    else [float(lv.integrator.k_i), float(lv.integrator.c_sat)],
                }
                for lv in self.levels
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> OnlineCalibration:
        levels = tuple(
            PIDLevel(
                str(lv["key"]),
                int(lv["lo_col"]),
                int(lv["hi_col"]),
                float(lv["alpha"]),
                float(lv["eta"]),
                tuple(float(q) for q in lv["q0"]),
                None if lv.get("integrator") is None else Integrator(*map(float, lv["integrator"])),
            )
            for lv in d["levels"]
        )
        cuts = tuple(float(c) for c in d.get("vol_cuts") or ())
        return cls(str(d["method"]), float(d["step"]), levels, d.get("vol_feature"), bool(d.get("normalize")), cuts)
