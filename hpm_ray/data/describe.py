"""A plain summary of a table: what a user checks before pointing an experiment at it."""

from __future__ import annotations

import pandas as pd

from hpm_ray.data.features import make_supervised
from hpm_ray.data.io import prepare_series, require_columns
from hpm_ray.data.splitters import PurgedWalkForward
from hpm_ray.errors import DataError

TIME_COLUMN_NAMES = ("timestamp", "time", "date", "datetime")


def guess_time_column(df: pd.DataFrame) -> str | None:
    for c in df.columns:
        if str(c).lower() in TIME_COLUMN_NAMES:
            return c
    return None


def describe(
    df: pd.DataFrame,
    target: str | None = None,
    time_col: str | None = None,
    price_col: str = "close",
    horizons: list[int] | None = None,
) -> dict:
    """Rows, columns, dtypes, missing counts, and the target balance or the time range.

    With ``horizons`` the frame is checked as a price series and, per horizon, the usable rows and the
    purged walk-forward block sizes are reported (an error if a horizon leaves too few rows).
    """
    out: dict = {
        "rows": len(df),
        "columns": int(df.shape[1]),
        "dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
        "missing": {str(c): int(n) for c, n in df.isna().sum().items()},
    }
    if target is not None:
        require_columns(df, [target], what="target column")
        y = df[target]
        counts = y.value_counts(dropna=False)
        out["target"] = {
            "name": target,
            "missing": int(y.isna().sum()),
            "classes": {str(k): int(v) for k, v in counts.items()} if counts.size <= 50 else None,
            "distinct": int(y.nunique()),
        }
    tcol = time_col or guess_time_column(df)
    if tcol is not None:
        require_columns(df, [tcol], what="time column")
        times = pd.to_datetime(df[tcol], utc=True, errors="coerce")
        out["time"] = {
            "column": str(tcol),
            "start": str(times.min()),
            "end": str(times.max()),
            "unparseable": int(times.isna().sum() - df[tcol].isna().sum()),
            "duplicates": int(times.duplicated().sum()),
            "sorted": bool(times.is_monotonic_increasing),
            "median_step": str(times.diff().median()),
        }
    if horizons:
        if tcol is None:
            raise DataError("--horizons needs a time column: pass --time-col")
        series = prepare_series(df, tcol, price_col)
        out["horizons"] = {}
        for h in horizons:
            X, _ = make_supervised(series, h)
            out["horizons"][str(h)] = {"usable_rows": len(X), **PurgedWalkForward(h).blocks(len(X)).sizes()}
    return out


def format_description(d: dict) -> str:
    lines = [f"rows: {d['rows']:,}   columns: {d['columns']}"]
    width = max(len(c) for c in d["dtypes"])
    lines.append(f"{'column'.ljust(width)}  {'dtype':<10} missing")
    for c, t in d["dtypes"].items():
        lines.append(f"{c.ljust(width)}  {t:<10} {d['missing'][c]}")
    if "target" in d:
        t = d["target"]
        lines.append(f"target {t['name']!r}: {t['distinct']} distinct value(s), {t['missing']} missing")
        if t["classes"]:
            total = sum(t["classes"].values())
            for k, v in t["classes"].items():
                lines.append(f"  {k}: {v:,} ({v / total:.1%})")
    if "time" in d:
        t = d["time"]
        lines.append(
            f"time {t['column']!r}: {t['start']} .. {t['end']}, median step {t['median_step']}, "
            f"{'sorted' if t['sorted'] else 'NOT sorted'}, {t['duplicates']} duplicate(s), {t['unparseable']} unparseable"
        )
    for h, b in d.get("horizons", {}).items():
        lines.append(
            f"horizon {h}: {b['usable_rows']:,} usable rows -> train {b['train']:,}, validation {b['validation']:,}, "
            f"calibration {b['calibration']:,}, test {b['test']:,}"
        )
    return "\n".join(lines)
