"""Load tables from disk and check them before any model sees them.

Every check raises :class:`~hpm_ray.errors.DataError` with a message that names the file and the problem,
so the CLI can print one line and exit 2 instead of a traceback deep inside pandas or LightGBM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpm_ray.errors import DataError

_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, gzip'd CSV or Parquet file; refuse missing, empty or unreadable files."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    if p.is_dir():
        raise DataError(f"data path is a folder, not a file: {p}")
    name = p.name.lower()
    if not name.endswith(_SUFFIXES):
        raise DataError(f"unsupported data format for {p.name}: use one of {', '.join(_SUFFIXES)}")
    if p.stat().st_size == 0:
        raise DataError(f"data file is empty: {p}")
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file is empty: {p}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read {p.name}: {reason}") from None
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError(f"data file has no rows: {p}")
    return df


def require_columns(df: pd.DataFrame, columns: list[str], *, what: str = "column") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        shown = ", ".join(map(str, list(df.columns)[:12]))
        raise DataError(f"missing {what} {', '.join(map(repr, missing))}; the data has: {shown}")


@dataclass(frozen=True)
class Tabular:
    """Features and target of a classification table, with the categorical columns named."""

    X: pd.DataFrame
    y: pd.Series
    categorical: list[str]


def prepare_tabular(df: pd.DataFrame, target: str, drop: list[str] | None = None) -> Tabular:
    """Split a frame into features and a target; string columns become pandas categoricals.

    Missing feature values are kept (the students' pipelines impute; LightGBM/XGBoost take NaN). A missing
    target value is an error: silently dropping labelled rows would change the experiment behind the user's back.
    """
    require_columns(df, [target], what="target column")
    y = df[target]
    n_nan = int(y.isna().sum())
    if n_nan:
        raise DataError(f"target {target!r} has {n_nan} missing value(s); drop or fill those rows first")
    if y.nunique() < 2:
        raise DataError(f"target {target!r} is constant (every value is {y.iloc[0]}): nothing to learn")
    unknown = [c for c in (drop or []) if c not in df.columns]
    if unknown:  # a mistyped id column would otherwise stay in as a feature
        raise DataError(
            f"cannot drop {unknown[0]!r}: no such column (columns: {', '.join(map(str, df.columns[:8]))}{', ...' if len(df.columns) > 8 else ''})"
        )
    drop_cols = [c for c in (drop or []) if c != target]
    X = df.drop(columns=[target, *drop_cols])
    if X.shape[1] == 0:
        raise DataError(f"no feature columns left besides target {target!r}")
    numeric = X.select_dtypes("number")
    n_inf = np.isinf(numeric.to_numpy(dtype=float)).sum(axis=0)
    if n_inf.any():
        col = numeric.columns[int(np.argmax(n_inf > 0))]
        raise DataError(f"feature {col!r} has {int(n_inf.max())} infinite value(s); replace them (e.g. with NaN) first")
    categorical = []
    for col in X.columns:
        if not pd.api.types.is_numeric_dtype(X[col]) and not pd.api.types.is_bool_dtype(X[col]):
            X[col] = X[col].astype("category")
            categorical.append(col)
    return Tabular(X=X, y=y.reset_index(drop=True), categorical=categorical)


@dataclass(frozen=True)
class Series:
    """A validated, time-sorted OHLCV-like frame indexed by timestamp."""

    frame: pd.DataFrame
    time_col: str
    price_col: str


def prepare_series(df: pd.DataFrame, time_col: str = "timestamp", price_col: str = "close") -> Series:
    """Check a price series: parseable, unique, ascending timestamps and a positive numeric price.

    Unsorted input is refused rather than sorted: a file out of order usually means a join went wrong
    upstream, and guessing the order would hide it.
    """
    require_columns(df, [time_col], what="time column")
    require_columns(df, [price_col], what="price column")
    if pd.api.types.is_numeric_dtype(df[time_col]):  # pandas would read 0, 1, 2 ... as nanoseconds since 1970
        raise DataError(
            f"time column {time_col!r} holds numbers, not timestamps; convert it first "
            "(e.g. pd.to_datetime(col, unit='s') for Unix seconds)"
        )
    try:
        times = pd.to_datetime(df[time_col], utc=True)
    except (ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0].split(". You might want to try")[0]  # pandas appends a list of hints
        raise DataError(f"time column {time_col!r} has values that are not timestamps: {reason}") from None
    if times.isna().any():
        raise DataError(f"time column {time_col!r} has {int(times.isna().sum())} missing value(s)")
    dup = times.duplicated()
    if dup.any():
        first = times[dup].iloc[0]
        raise DataError(f"time column {time_col!r} has {int(dup.sum())} duplicate timestamp(s), first {first}")
    if not times.is_monotonic_increasing:
        bad = int(np.argmax((times.diff() < pd.Timedelta(0)).to_numpy()))
        raise DataError(f"time column {time_col!r} is not sorted ascending (row {bad}: {times.iloc[bad]})")
    price = pd.to_numeric(df[price_col], errors="coerce")
    n_bad = int((~np.isfinite(price.to_numpy(dtype=float))).sum())
    if n_bad:
        raise DataError(f"price column {price_col!r} has {n_bad} non-numeric, missing or infinite value(s)")
    if (price <= 0).any():
        raise DataError(
            f"price column {price_col!r} has {int((price <= 0).sum())} value(s) <= 0; log returns need positive prices"
        )
    if price.nunique() < 2:
        raise DataError(f"price column {price_col!r} is constant: a flat series has no returns to forecast")
    frame = df.drop(columns=[time_col]).copy()
    frame[price_col] = price.to_numpy()
    frame.index = pd.DatetimeIndex(times, name=time_col)
    return Series(frame=frame, time_col=time_col, price_col=price_col)
