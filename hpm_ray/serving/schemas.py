"""Parse MLflow scoring payloads into a feature frame, or say precisely why not (a 4xx, never a 5xx).

Accepted bodies (as ``mlflow models serve``): ``{"dataframe_split": {"columns": [...], "data": [[...]]}}``,
``{"dataframe_records": [{col: value}, ...]}`` and ``{"instances": [...]}`` (records, or rows in the
model's column order). Every cell must be a number; ``null``/NaN only when the model takes missing values.
"""

from __future__ import annotations

import json
import math
from numbers import Real

import numpy as np
import pandas as pd

FORMATS = ("dataframe_split", "dataframe_records", "instances")


class PayloadError(Exception):
    """A request the server refuses: HTTP ``status`` and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _loads(body: bytes, max_bytes: int):
    if len(body) > max_bytes:
        raise PayloadError(413, f"payload is {len(body)} bytes; the limit is {max_bytes}")
    if not body.strip():
        raise PayloadError(400, "empty body; send JSON with one of " + ", ".join(FORMATS))
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PayloadError(400, f"malformed JSON: {exc}") from None


def _rows(payload, features: list[str]) -> tuple[list[str], list]:
    if not isinstance(payload, dict):
        raise PayloadError(400, "the body must be a JSON object with one of " + ", ".join(FORMATS))
    present = [k for k in FORMATS if k in payload]
    if len(present) != 1:
        raise PayloadError(400, f"expected exactly one of {', '.join(FORMATS)}; got keys {sorted(map(str, payload))[:10]}")
    fmt = present[0]
    value = payload[fmt]
    if fmt == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("columns"), list) or not isinstance(value.get("data"), list):
            raise PayloadError(400, "dataframe_split needs 'columns' (list) and 'data' (list of rows)")
        columns = value["columns"]
        if not all(isinstance(c, str) for c in columns):
            raise PayloadError(422, "dataframe_split: column names must be strings")
        data = value["data"]
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise PayloadError(422, f"dataframe_split: row {i} must be a list of {len(columns)} values")
        return columns, data
    if not isinstance(value, list):
        raise PayloadError(400, f"{fmt} must be a list")
    if value and all(isinstance(r, list) for r in value) and fmt == "instances":
        for i, row in enumerate(value):
            if len(row) != len(features):
                raise PayloadError(422, f"instances: row {i} has {len(row)} values; the model takes {len(features)} ({', '.join(features[:5])}, ...)")
        return list(features), value
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise PayloadError(422, f"{fmt}: row {i} must be an object of column -> value")
    columns = list(value[0]) if value else []
    for i, row in enumerate(value):
        if set(row) != set(columns):
            raise PayloadError(422, f"{fmt}: row {i} has different columns from row 0")
    return columns, [[row[c] for c in columns] for row in value]


def parse_payload(
    body: bytes,
    features: list[str],
    max_bytes: int = 1_000_000,
    max_rows: int = 10_000,
    allow_nan: bool = False,
    integer_columns: tuple[str, ...] = (),
) -> pd.DataFrame:
    """The request body as a frame with exactly ``features`` in order; :class:`PayloadError` otherwise.

    Columns are float, except ``integer_columns`` (the model signature says integer), which must hold
    whole numbers and come back as int64.
    """
    columns, data = _rows(_loads(body, max_bytes), features)
    if not data:
        raise PayloadError(422, "empty batch: send at least one row")
    if len(data) > max_rows:
        raise PayloadError(413, f"{len(data)} rows; the limit is {max_rows} per request")
    if len(set(columns)) != len(columns):
        raise PayloadError(422, "duplicate column names")
    missing = [f for f in features if f not in columns]
    unknown = [c for c in columns if c not in set(features)]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing columns {missing[:10]}")
        if unknown:
            parts.append(f"unknown columns {unknown[:10]}")
        raise PayloadError(422, "; ".join(parts))
    values = _fast_values(data, allow_nan)
    if values is None:
        _explain_cells(data, columns, allow_nan)  # raises with the first bad cell
        values = np.array(data, dtype=float)
    values = values[:, [columns.index(f) for f in features]]
    ints = set(integer_columns)
    if ints:
        idx = [j for j, f in enumerate(features) if f in ints]
        sub = values[:, idx]
        bad = (np.isnan(sub) | (sub != np.round(sub)) | (np.abs(sub) >= 2**63)).any(axis=0)
        if bad.any():
            raise PayloadError(422, f"column {features[idx[int(np.argmax(bad))]]!r}: the model takes whole numbers")
    return pd.DataFrame({f: values[:, j].astype(np.int64) if f in ints else values[:, j] for j, f in enumerate(features)})


def _fast_values(data: list, allow_nan: bool) -> np.ndarray | None:
    """The float matrix when every cell is a plain finite number (the common case), else ``None``."""
    if not all(type(v) is float or type(v) is int for row in data for v in row) and (
            not allow_nan or not all(v is None or type(v) is float or type(v) is int for row in data for v in row)):
        return None
    try:
        values = np.array(data, dtype=float)
    except (OverflowError, ValueError, TypeError):
        return None
    finite = np.isfinite(values)
    if finite.all() or (allow_nan and (finite | np.isnan(values)).all()):
        return values
    return None


def _explain_cells(data: list, columns: list[str], allow_nan: bool) -> None:
    """Find the first cell the fast path refused and raise a 422 naming its row and column."""
    for i, row in enumerate(data):
        for c, v in zip(columns, row):
            if v is None:
                if not allow_nan:
                    raise PayloadError(422, f"row {i}, column {c!r}: null, and this model does not take missing values")
            elif isinstance(v, bool) or not isinstance(v, Real):
                raise PayloadError(422, f"row {i}, column {c!r}: expected a number, got {type(v).__name__}")
            else:
                try:
                    fv = float(v)
                except OverflowError:
                    raise PayloadError(422, f"row {i}, column {c!r}: number too large for a float") from None
                if not math.isfinite(fv) and not (allow_nan and math.isnan(fv)):
                    raise PayloadError(422, f"row {i}, column {c!r}: {v} is not a finite number")
