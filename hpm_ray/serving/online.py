"""Online intervals of a served forecaster: conformal PID continued with the realised values posted as feedback.

A forecaster registered with an :class:`~hpm_ray.hpo.online.OnlineCalibration` (PID chosen on its calibration
block, recorded in its MLmodel metadata) keeps, per app and version, one tracker per interval level and
volatility tercile, started where calibration ended. ``/predict`` answers each row's adaptive interval
``[q_lo - m v, q_hi + m v]`` (the raw quantile pair widened by the tracker's margin ``m``, times the row's
volatility ``v`` when scores are normalised) beside the static CQR one, and the prediction log stores the margin
each row was served with. When the row's realised value arrives, its score against the raw pair is compared
with that margin and the tracker moves by :func:`~hpm_ray.hpo.online.pid_update`, the update the backtest uses.

Labels posted to ``/feedback`` are matured by definition: the realised h-bar return exists only once its h bars
have passed, so the client posts it then, and the tracker uses it from that moment on, as the backtest uses row
t's label from row t + h on. Each label updates once (the log refuses a second one). A row whose volatility is
missing or non-positive gets no adaptive interval (``null``) and its label moves no tracker.
"""

from __future__ import annotations

import numpy as np

from hpm_ray.hpo.conformal import cqr_scores
from hpm_ray.hpo.online import METADATA_KEY, OnlineCalibration, PIDState, pid_margin, pid_update

State = dict[str, list[PIDState]]  # level key ("90") -> one tracker per volatility group


def calibration_of(metadata: dict | None) -> OnlineCalibration | None:
    """The online calibration in a version's MLmodel metadata; None for one registered without (static only)."""
    d = (metadata or {}).get(METADATA_KEY)
    return OnlineCalibration.from_dict(d) if d else None


def state_to_json(state: State) -> dict:
    return {k: [[t.p, t.s, t.n] for t in trackers] for k, trackers in state.items()}


def state_from_json(d: dict) -> State:
    return {k: [PIDState(float(p), float(s), int(n)) for p, s, n in trackers] for k, trackers in d.items()}


def adaptive(
    cal: OnlineCalibration, state: State, values: np.ndarray, vol: np.ndarray | None
) -> tuple[list[dict | None], dict]:
    """Each row's adaptive interval (``{"lo_90", "hi_90", ...}``, None where its volatility is unusable) and the
    record the prediction log keeps for the update: per row its score scale (the volatility when normalised, else
    1), group and served margin per level.

    ``values``: the forecaster's quantile columns (``q_*``, as the log stores them); ``vol``: the volatility
    feature of each row (needed when the calibration normalises or groups by it).

    Examples
    --------
    >>> from hpm_ray.hpo.online import PIDLevel
    >>> cal = OnlineCalibration("pid", 0.01, (PIDLevel("90", 0, 2, 0.1, 0.05, (0.5,)),))
    >>> rows, rec = adaptive(cal, cal.start(), np.array([[-1.0, 0.0, 1.0]]), None)
    >>> rows, rec["margin"]
    ([{'lo_90': -1.5, 'hi_90': 1.5}], {'90': [0.5]})
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    needs_vol = cal.normalize or bool(cal.vol_cuts)
    v = np.ones(n) if vol is None else np.asarray(vol, dtype=float)
    ok = np.isfinite(v) & (v > 0) if needs_vol and vol is not None else np.full(n, not needs_vol)
    groups = cal.groups(np.where(ok, v, 1.0))
    scale = np.where(ok, v, np.nan) if cal.normalize else np.ones(n)
    rows: list[dict | None] = [{} if ok[r] else None for r in range(n)]
    margins: dict[str, list[float | None]] = {}
    for lv in cal.levels:
        m = [pid_margin(state[lv.key][groups[r]], lv.integrator) if ok[r] else None for r in range(n)]
        margins[lv.key] = m
        for r in range(n):
            if ok[r]:
                rows[r][f"lo_{lv.key}"] = float(values[r, lv.lo_col] - m[r] * scale[r])
                rows[r][f"hi_{lv.key}"] = float(values[r, lv.hi_col] + m[r] * scale[r])
    record = {
        "scale": [float(scale[r]) if ok[r] else None for r in range(n)],  # the score's divisor (1: not normalised)
        "group": [int(groups[r]) if ok[r] else None for r in range(n)],
        "margin": margins,
    }
    return rows, record


def learn(cal: OnlineCalibration, state: State, values: list, record: dict, labels: list[float]) -> State:
    """The trackers after one labelled request: each row (in order) with a served margin moves its group's
    tracker per level by :func:`~hpm_ray.hpo.online.pid_update`, its score taken against the raw quantile pair.

    Examples
    --------
    >>> from hpm_ray.hpo.online import PIDLevel
    >>> cal = OnlineCalibration("pid", 0.01, (PIDLevel("90", 0, 2, 0.1, 0.05, (0.5,)),))
    >>> rows, rec = adaptive(cal, cal.start(), np.array([[-1.0, 0.0, 1.0]]), None)
    >>> learn(cal, cal.start(), [[-1.0, 0.0, 1.0]], rec, [3.0])["90"]  # score 2 > 0.5: a miss, + 0.05 * 0.9
    [PIDState(p=0.545, s=0.9, n=1)]
    """
    new = {k: list(trackers) for k, trackers in state.items()}
    values_ = np.asarray(values, dtype=float)
    for r, y in enumerate(labels):
        g = record["group"][r]
        if g is None:
            continue
        for lv in cal.levels:
            score = float(cqr_scores(y, values_[r, lv.lo_col], values_[r, lv.hi_col])) / record["scale"][r]
            new[lv.key][g] = pid_update(new[lv.key][g], score, record["margin"][lv.key][r], lv.alpha, lv.eta)
    return new
