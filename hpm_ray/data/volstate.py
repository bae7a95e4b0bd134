"""Volatility states known at bar t, from 1-bar log returns up to t: the inputs of the volatility-scaled baselines.

They are feature columns (:func:`hpm_ray.data.features.ohlcv_features` adds them), so a registered baseline
forecasts from a feature row as the tuned model does, and the baselines' evaluation reads the same columns: what
is scored is what is served. The states have long memories: rows built from a shorter price history than the
model was evaluated on get other values (``rv_month`` averages 720 bars; the EWMA at 0.995 keeps 0.995^n of its
weight beyond n bars, 2.7 % at 720, 0.06 % at 1,500). Build a served row from at least 1,500 bars.

- ``ewma_vol_<decay>``: exponentially weighted volatility of 1-bar returns, one column per decay of
  :data:`EWMA_DECAYS` (the baseline chooses its decay on validation).
- ``rv_day``, ``rv_week``, ``rv_month``: the HAR-RV regressors (Corsi 2009), the mean squared 1-bar return over the
  last 24, 168 and 720 bars, x 24 (daily units; the bars are hourly).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EWMA_DECAYS = (0.94, 0.97, 0.99, 0.995)
DAY, WEEK, MONTH = 24, 168, 720  # HAR windows in bars (hourly data)
HAR_COLUMNS = ("rv_day", "rv_week", "rv_month")


def ewma_column(decay: float) -> str:
    """The feature name of the EWMA volatility at ``decay``: ``ewma_vol_0.94``."""
    return f"ewma_vol_{decay:g}"


STATE_COLUMNS = (*(ewma_column(d) for d in EWMA_DECAYS), *HAR_COLUMNS)  # every column :func:`volatility_state` adds


def ewma_vol(r: np.ndarray, decay: float) -> np.ndarray:
    """sqrt of ``sum_k decay^k r_{t-k}^2 / sum_k decay^k`` over the finite returns up to t.

    The weights are normalised over the bars seen so far (pandas ``adjust=True``), so the state does not depend on
    a start value; after a few half-lives it is the RiskMetrics ``s2_t = decay s2_{t-1} + (1 - decay) r_t^2``.
    NaN before the first finite return.
    """
    r2 = pd.Series(np.asarray(r, dtype=float) ** 2)
    return np.sqrt(r2.ewm(alpha=1.0 - decay, adjust=True).mean().to_numpy())


def har_rv(r: np.ndarray) -> np.ndarray:
    """Columns [RV_day, RV_week, RV_month] at each row: mean squared 1-bar return over the last 24, 168, 720 bars
    (fewer at the start: the finite ones seen so far), x 24. NaN before the first finite return."""
    r2 = np.asarray(r, dtype=float) ** 2
    ok = np.isfinite(r2)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, r2, 0.0))])
    k = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(len(r2))
    cols = []
    for w in (DAY, WEEK, MONTH):
        lo = np.maximum(idx + 1 - w, 0)
        count = k[idx + 1] - k[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            cols.append(np.where(count > 0, (c[idx + 1] - c[lo]) / count * DAY, np.nan))
    return np.column_stack(cols)


def volatility_state(r: np.ndarray) -> dict[str, np.ndarray]:
    """Every state column at every row, from the 1-bar returns ``r`` (row t uses ``r[: t + 1]`` only).

    Examples
    --------
    >>> s = volatility_state(np.array([np.nan, 0.01, -0.01]))
    >>> sorted(s)[:2], round(float(s["rv_day"][2]), 6)
    (['ewma_vol_0.94', 'ewma_vol_0.97'], 0.0024)
    """
    out = {ewma_column(d): ewma_vol(r, d) for d in EWMA_DECAYS}
    out.update(zip(HAR_COLUMNS, har_rv(r).T))
    return out
