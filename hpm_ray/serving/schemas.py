"""Parse MLflow scoring payloads into a feature frame, or say precisely why not (a 4xx, never a 5xx).

Accepted bodies (as ``mlflow models serve``): ``{"dataframe_split": {"columns": [...], "data": [[...]]}}``,
``{"dataframe_records": [{col: value}, ...]}`` and ``{"instances": [...]}`` (records, or rows in the
model's column order). Cells are numbers, or strings in the model's string columns; ``null``/NaN only where
the model takes missing values.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from numbers import Real

import numpy as np
import pandas as pd

from hpm_ray.serving.models import InputSpec

FORMATS = ("dataframe_split", "dataframe_records", "instances")


class PayloadError(Exception):
    """A request the server refuses: HTTP ``status`` and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


MAX_INT_DIGITS = 40  # far beyond any feature or label; Python refuses to parse more than 4,300 anyway
_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % (MAX_INT_DIGITS + 1))


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        digits = len(text.lstrip("-"))
        raise PayloadError(422, f"number too large: {digits} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(text)


def load_json(body: bytes, max_bytes: int):
    """A request body as JSON, or a :class:`PayloadError`: too large (413), empty, malformed or nested too
    deeply for the parser (400), or holding an integer too long to be a value (422)."""
    if len(body) > max_bytes:
        raise PayloadError(413, f"payload is {len(body)} bytes; the limit is {max_bytes}")
    if not body.strip():
        raise PayloadError(400, "empty body; send a JSON object")
    try:  # the per-integer check is a Python call per cell (~1.7 ms for 100 rows): only when a long run is there
        return json.loads(body, parse_int=_int) if _LONG_DIGITS.search(body) else json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise PayloadError(400, "malformed JSON: nested too deeply") from None


async def read_body(request, max_bytes: int) -> bytes:
    """The body of a Starlette ``request``, read in chunks and refused (413) as soon as it passes ``max_bytes``,
    whether the client declared its length or sent it chunked: an oversize body is never held in full."""
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > max_bytes:
        raise PayloadError(413, f"payload is {size} bytes; the limit is {max_bytes}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise PayloadError(413, f"payload is over {max_bytes} bytes, the limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _rows(payload, features: list[str]) -> tuple[list[str], list]:
    if not isinstance(payload, dict):
        raise PayloadError(400, "the body must be a JSON object with one of " + ", ".join(FORMATS))
    present = [k for k in FORMATS if k in payload]
    if len(present) != 1:
        raise PayloadError(
            400, f"expected exactly one of {', '.join(FORMATS)}; got keys {sorted(map(str, payload))[:10]}"
        )
    fmt = present[0]
    value = payload[fmt]
    if fmt == "dataframe_split":
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("columns"), list)
            or not isinstance(value.get("data"), list)
        ):
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
                raise PayloadError(
                    422,
                    f"instances: row {i} has {len(row)} values; the model takes {len(features)} ({', '.join(features[:5])}, ...)",
                )
        return list(features), value
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise PayloadError(422, f"{fmt}: row {i} must be an object of column -> value")
    columns = list(value[0]) if value else []
    for i, row in enumerate(value):
        if set(row) != set(columns):
            raise PayloadError(422, f"{fmt}: row {i} has different columns from row 0")
    return columns, [[row[c] for c in columns] for row in value]


@dataclass(frozen=True)
class Payload:
    """A parsed request: the model's columns in order, the columns it ignored, unseen categories per column."""

    frame: pd.DataFrame
    ignored: tuple[str, ...] = ()
    unseen: dict[str, int] = field(default_factory=dict)


def parse_payload(
    body: bytes,
    inputs: InputSpec,
    max_bytes: int = 1_000_000,
    max_rows: int = 10_000,
    allow_nan: bool = False,
) -> Payload:
    """The request body as a frame with exactly ``inputs.features`` in order; :class:`PayloadError` otherwise.

    Numeric columns come back as float, except ``inputs.integer`` (an older signature that says integer),
    which must hold whole numbers and come back as int64; string columns hold strings or null. Nulls are
    accepted in the optional columns (training had gaps), or everywhere with ``allow_nan`` or a model that
    says it takes them (``inputs.nullable``); an optional column may be left out. Columns the model does not take are dropped and named in :attr:`Payload.ignored`
    (MLflow's scoring server drops them too).
    """
    features = list(inputs.features)
    allow_nan = allow_nan or inputs.nullable
    columns, data = _rows(load_json(body, max_bytes), features)
    if not data:
        raise PayloadError(422, "empty batch: send at least one row")
    if len(data) > max_rows:
        raise PayloadError(413, f"{len(data)} rows; the limit is {max_rows} per request")
    if len(set(columns)) != len(columns):
        raise PayloadError(422, "duplicate column names")
    optional, strings, booleans = set(inputs.optional), set(inputs.strings), set(inputs.booleans)
    missing = [f for f in features if f not in columns and f not in optional]
    if missing:
        raise PayloadError(422, f"missing columns {missing[:10]}")
    taken = set(features)
    ignored = tuple(c for c in columns if c not in taken)
    numeric = [j for j, c in enumerate(columns) if c in taken and c not in strings and c not in booleans]
    rows = data if len(numeric) == len(columns) else [[row[j] for j in numeric] for row in data]
    names = [columns[j] for j in numeric]
    nullable = allow_nan or bool(optional & set(names))
    values = _fast_values(rows, nullable)
    if values is None:
        _explain_cells(rows, names, nullable)  # raises with the first bad cell
        values = np.array(rows, dtype=float)
    if nullable and not allow_nan:
        gaps = np.isnan(values).any(axis=0) & np.array([c not in optional for c in names], dtype=bool)
        if gaps.any():
            c = names[int(np.argmax(gaps))]
            raise PayloadError(
                422,
                f"row {int(np.argmax(np.isnan(values[:, names.index(c)])))}, column {c!r}: null, "
                "and this model does not take missing values",
            )
    where = {c: k for k, c in enumerate(names)}
    if all(f in where and f not in inputs.integer for f in features):  # all float, every column sent: one block
        order = [where[f] for f in features]  # a 2-D frame is built ~3x faster than from a dict of 23 columns
        return Payload(
            pd.DataFrame(values if order == list(range(len(names))) else values[:, order], columns=features), ignored
        )
    out: dict[str, object] = {}
    unseen: dict[str, int] = {}
    for f in features:
        if f in where:
            out[f] = _integers(values[:, where[f]], f) if f in inputs.integer else values[:, where[f]]
        elif f not in columns:  # an optional column left out: all missing
            out[f] = [None] * len(data) if f in strings or f in booleans else np.full(len(data), np.nan)
        else:
            out[f] = _cells(data, columns.index(f), f, allow_nan or f in optional, bool if f in booleans else str)
            known = inputs.categories.get(f)
            if known is not None:
                n = sum(v is not None and v not in known for v in out[f])
                if n:
                    unseen[f] = n
    return Payload(pd.DataFrame(out), ignored, unseen)


def _integers(column: np.ndarray, name: str) -> np.ndarray:
    """Whole numbers as int64; with a null (where the model takes them) the column stays float."""
    finite = column[~np.isnan(column)]
    if ((finite != np.round(finite)) | (np.abs(finite) >= 2**63)).any():
        raise PayloadError(422, f"column {name!r}: the model takes whole numbers")
    return column if len(finite) < len(column) else column.astype(np.int64)


def _cells(data: list, j: int, name: str, nullable: bool, kind: type) -> list:
    """Column ``j`` of string (or true/false) cells; JSON null, or NaN as a NaN-writing client sends a gap, is missing."""
    out = []
    for i, row in enumerate(data):
        v = row[j]
        if v is None or (type(v) is float and math.isnan(v)):
            if not nullable:
                raise PayloadError(422, f"row {i}, column {name!r}: null, and this model does not take missing values")
            out.append(None)
        elif type(v) is kind:
            out.append(v)
        else:
            raise PayloadError(
                422,
                f"row {i}, column {name!r}: expected {'a string' if kind is str else 'true or false'}, "
                f"got {type(v).__name__}",
            )
    return out


def _fast_values(data: list, allow_nan: bool) -> np.ndarray | None:
    """The float matrix when every cell is a plain finite number (the common case), else ``None``."""
    if not all(type(v) is float or type(v) is int for row in data for v in row) and (
        not allow_nan or not all(v is None or type(v) is float or type(v) is int for row in data for v in row)
    ):
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


def records(out: pd.DataFrame) -> list[dict]:
    """A model's answer as JSON-ready rows, exactly what ``out.to_dict(orient="records")`` gives.

    Plain numeric columns (a classifier's or forecaster's answer) are built column by column: on the request
    path about 3x faster for 1 row and 2.5x for 100 (a few hundred microseconds a request on 2 cores). Any other
    dtype (strings, nullable integers, whose missing values pandas turns into None) goes through pandas."""
    columns = list(out.columns)
    series = [out[c] for c in columns] if out.columns.is_unique else []
    if not series or not all(isinstance(s.dtype, np.dtype) and s.dtype.kind in "biuf" for s in series):
        return out.to_dict(orient="records")
    return [dict(zip(columns, row)) for row in zip(*(s.tolist() for s in series))]
