"""Conformal calibration of quantile forecasts (pure NumPy).

CQR (Romano, Patterson & Candes 2019) widens or narrows a (lo, hi) quantile pair by the finite-sample
corrected quantile of the conformity scores ``max(lo - y, y - hi)`` on a calibration block. ACI (Gibbs &
Candes 2021) then moves the miscoverage level online so coverage tracks a drifting series. Monotone
rearrangement (Chernozhukov et al. 2010) is sorting each row's quantiles, which never increases pinball loss.
"""

from __future__ import annotations

import math

import numpy as np

from hpm_ray.errors import SpecError


def finite_sample_level(n: int, alpha: float) -> float:
    """``ceil((n + 1)(1 - alpha)) / n``: the empirical level that gives >= 1 - alpha coverage on exchangeable data.

    It exceeds 1 when the calibration set is too small for ``alpha`` (then only an infinite interval is valid).
    """
    if n < 1:
        raise SpecError("conformal calibration needs at least one calibration row")
    return math.ceil((n + 1) * (1.0 - alpha)) / n


def cqr_scores(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Conformity score of each row: how far ``y`` falls outside [lo, hi] (negative when inside)."""
    y = np.asarray(y, dtype=float)
    return np.maximum(np.asarray(lo, dtype=float) - y, y - np.asarray(hi, dtype=float))


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ``finite_sample_level`` order statistic of ``scores`` (``inf`` when the level exceeds 1)."""
    s = np.sort(np.asarray(scores, dtype=float))
    k = math.ceil((len(s) + 1) * (1.0 - alpha))
    if len(s) == 0:
        raise SpecError("conformal calibration needs at least one calibration row")
    return float(s[k - 1]) if k <= len(s) else math.inf


def cqr_adjust(lo: np.ndarray, hi: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Move both ends outwards by ``margin`` (inwards when negative)."""
    return np.asarray(lo, dtype=float) - margin, np.asarray(hi, dtype=float) + margin


def rearrange(q: np.ndarray) -> np.ndarray:
    """Monotone rearrangement: sort each row so quantile predictions never cross."""
    return np.sort(np.asarray(q, dtype=float), axis=1)


def quantile_pairs(quantiles: list[float]) -> list[tuple[int, int, float]]:
    """(lower column, upper column, alpha) for each symmetric pair: 0.05/0.95 -> alpha 0.10.

    Raises SpecError unless ``quantiles`` are strictly increasing in (0, 1) and every q < 0.5 has 1 - q.
    """
    qs = [float(q) for q in quantiles]
    if not qs or any(not 0.0 < q < 1.0 for q in qs):
        raise SpecError(f"quantiles must lie strictly between 0 and 1, got {qs}")
    if any(b <= a for a, b in zip(qs, qs[1:])):
        raise SpecError(f"quantiles must be strictly increasing, got {qs}")
    pairs = []
    for i, q in enumerate(qs):
        if q >= 0.5:
            continue
        j = next((j for j, p in enumerate(qs) if abs(p - (1.0 - q)) < 1e-9), None)
        if j is None:
            raise SpecError(f"quantile {q} has no symmetric partner {1 - q:g}: intervals need pairs like 0.05/0.95")
        pairs.append((i, j, round(1.0 - (qs[j] - q), 10)))
    if any(q > 0.5 and not any(abs(p - (1.0 - q)) < 1e-9 for p in qs) for q in qs):
        raise SpecError(f"quantiles must come in symmetric pairs (q, 1 - q), got {qs}")
    if not pairs:
        raise SpecError(f"quantiles need at least one symmetric pair for an interval, got {qs}")
    return pairs


def aci_intervals(
    lo: np.ndarray,
    hi: np.ndarray,
    y: np.ndarray,
    cal_scores: np.ndarray,
    alpha: float,
    gamma: float = 0.005,
    delay: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive conformal inference along a time-ordered block; returns (lo_t, hi_t, alpha_t).

    ``alpha_{t+1} = alpha_t + gamma * (alpha - err_t)``, where ``err_t`` is the miss indicator of the row whose
    label became known at ``t``: with an h-bar forward target, row t's outcome is known only ``delay = h`` bars
    later, so the update uses row ``t - delay`` (no look-ahead). The margin at ``t`` is the calibration-score
    quantile at level ``1 - alpha_t``, clipped to the score range (the infinite interval of alpha_t <= 0 is
    replaced by the widest calibrated one so widths stay finite).
    """
    lo, hi, y = (np.asarray(a, dtype=float) for a in (lo, hi, y))
    s = np.sort(np.asarray(cal_scores, dtype=float))
    n = len(y)
    alphas = np.empty(n)
    out_lo, out_hi, missed = np.empty(n), np.empty(n), np.zeros(n, dtype=bool)
    a_t = alpha
    for t in range(n):
        if t - delay >= 0:
            a_t += gamma * (alpha - float(missed[t - delay]))
        alphas[t] = a_t
        k = min(max(math.ceil((len(s) + 1) * (1.0 - a_t)), 1), len(s))
        m = s[k - 1]
        out_lo[t], out_hi[t] = lo[t] - m, hi[t] + m
        missed[t] = not (out_lo[t] <= y[t] <= out_hi[t])
    return out_lo, out_hi, alphas


class ConformalQuantiles:
    """CQR for every symmetric pair of a quantile matrix, then monotone rearrangement.

    ``fit(q_cal, y_cal)`` learns one margin per pair; ``transform(q)`` returns the calibrated, sorted
    matrix (pair columns moved by their margins, the median untouched). Margins are stored by pair alpha.
    """

    def __init__(self, quantiles: list[float]):
        self.quantiles = [float(q) for q in quantiles]
        self.pairs = quantile_pairs(self.quantiles)

    def fit(self, q_cal: np.ndarray, y_cal: np.ndarray) -> ConformalQuantiles:
        q_cal = rearrange(q_cal)
        self.scores_ = {a: cqr_scores(y_cal, q_cal[:, i], q_cal[:, j]) for i, j, a in self.pairs}
        self.margins_ = {a: conformal_quantile(s, a) for a, s in self.scores_.items()}
        return self

    def transform(self, q: np.ndarray) -> np.ndarray:
        out = rearrange(q)
        for i, j, a in self.pairs:
            out[:, i], out[:, j] = cqr_adjust(out[:, i], out[:, j], self.margins_[a])
        return rearrange(out)

    def intervals(self, q_calibrated: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """Nominal coverage (0.9, 0.5, ...) -> (lo, hi) columns of a ``transform`` output."""
        return {round(1.0 - a, 10): (q_calibrated[:, i], q_calibrated[:, j]) for i, j, a in self.pairs}
