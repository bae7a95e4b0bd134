"""Time-series features from any OHLCV-like frame, and the forward log-return target.

Every feature at bar t uses bars <= t only (trailing windows), so the only look-ahead in a supervised row is
its target, which the purged splitters account for.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from hpm_ray.data.io import Series
from hpm_ray.data.volstate import volatility_state
from hpm_ray.errors import DataError

DEFAULT_WINDOWS = (6, 24, 72, 168)
_VOLUME_NAME = re.compile(r"vol", re.IGNORECASE)


def detect_volume_columns(frame: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """Numeric columns whose name mentions volume ("volume", "Volume USD", "vol_btc", ...)."""
    return [
        c
        for c in frame.columns
        if c not in exclude and _VOLUME_NAME.search(str(c)) and pd.api.types.is_numeric_dtype(frame[c])
    ]


def _find(frame: pd.DataFrame, name: str) -> str | None:
    for c in frame.columns:
        if str(c).lower() == name:
            return c
    return None


def ohlcv_features(
    series: Series,
    windows: tuple[int, ...] = DEFAULT_WINDOWS,
    volume_cols: list[str] | None = None,
) -> pd.DataFrame:
    """Log returns, realised volatility, range and volume features, and the volatility states of
    :mod:`hpm_ray.data.volstate`; NaN during each window's warm-up."""
    f = series.frame
    close = f[series.price_col].astype(float)
    logp = np.log(close)
    r1 = logp.diff()
    out: dict[str, pd.Series] = {"ret_1": r1}
    for w in windows:
        out[f"ret_{w}"] = logp - logp.shift(w)
        out[f"rv_{w}"] = r1.rolling(w).std()
        out[f"mom_z_{w}"] = (logp - logp.rolling(w).mean()) / (out[f"rv_{w}"] * np.sqrt(w))
    high, low, open_ = _find(f, "high"), _find(f, "low"), _find(f, "open")
    if high is not None and low is not None:
        hl = np.log(f[high].astype(float) / f[low].astype(float))
        out["range_1"] = hl
        for w in windows:
            # Parkinson estimator: uses the bar range, more efficient than close-to-close volatility.
            out[f"parkinson_{w}"] = np.sqrt((hl**2).rolling(w).mean() / (4 * np.log(2)))
    if open_ is not None:
        out["body_1"] = logp - np.log(f[open_].astype(float))
    price_like = tuple(c for c in (series.price_col, high, low, open_) if c is not None)
    vcols = detect_volume_columns(f, price_like) if volume_cols is None else volume_cols
    for c in vcols:
        lv = np.log1p(f[c].astype(float).clip(lower=0))
        key = re.sub(r"\W+", "_", str(c)).strip("_").lower()
        for w in windows:
            std = lv.rolling(w).std()
            out[f"{key}_z_{w}"] = (lv - lv.rolling(w).mean()) / std.where(std > 0)
    # the volatility-scaled baselines' states (EWMA, HAR-RV): a registered baseline reads them from the row
    out.update({k: pd.Series(v, index=f.index) for k, v in volatility_state(r1.to_numpy()).items()})
    if isinstance(f.index, pd.DatetimeIndex):
        hours = f.index.hour + f.index.minute / 60.0
        out["hour_sin"] = pd.Series(np.sin(2 * np.pi * hours / 24), index=f.index)
        out["hour_cos"] = pd.Series(np.cos(2 * np.pi * hours / 24), index=f.index)
        out["dow_sin"] = pd.Series(np.sin(2 * np.pi * f.index.dayofweek / 7), index=f.index)
        out["dow_cos"] = pd.Series(np.cos(2 * np.pi * f.index.dayofweek / 7), index=f.index)
    feats = pd.DataFrame(out, index=f.index)
    return feats.replace([np.inf, -np.inf], np.nan)


def forward_log_return(price: pd.Series, horizon: int) -> pd.Series:
    """log(p[t + h] / p[t]): the target of row t; NaN for the last h rows."""
    if horizon < 1:
        raise DataError(f"horizon must be >= 1 bar, got {horizon}")
    logp = np.log(price.astype(float))
    return logp.shift(-horizon) - logp


def warmup_bars(windows: tuple[int, ...] = DEFAULT_WINDOWS) -> int:
    """Bars consumed before every trailing feature is defined (the 1-bar return costs one more)."""
    return max(windows) + 1


def make_supervised(
    series: Series,
    horizon: int,
    windows: tuple[int, ...] = DEFAULT_WINDOWS,
    volume_cols: list[str] | None = None,
    min_rows: int = 1,
) -> tuple[pd.DataFrame, pd.Series]:
    """Rows (features at t, forward return over ``horizon``) with warm-up and target-less tail removed.

    Rows keep their time order and the DatetimeIndex; position i in the result is "bar i" for the splitters.
    """
    n = len(series.frame)
    need = warmup_bars(windows) + horizon + min_rows
    if n < need:
        raise DataError(
            f"series has {n} rows; horizon {horizon} with {max(windows)}-bar feature windows needs at least {need}"
        )
    X = ohlcv_features(series, windows, volume_cols)
    y = forward_log_return(series.frame[series.price_col], horizon).rename(f"fwd_logret_{horizon}")
    # Warm-up is a fixed prefix (the longest window). Zero-volume bars can make a volume z-score NaN mid-series:
    # those stay NaN (LightGBM handles missing values) rather than punching holes in the time grid.
    keep = np.zeros(n, dtype=bool)
    keep[warmup_bars(windows) - 1 : n - horizon] = True
    X, y = X[keep], y[keep]
    if len(X) < min_rows:
        raise DataError(f"only {len(X)} usable rows for horizon {horizon}; need at least {min_rows}")
    return X, y
