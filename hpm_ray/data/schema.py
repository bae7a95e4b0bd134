"""What a model was trained on, column by column, and how to turn a raw frame back into exactly that.

A registered model carries its :class:`FrameSchema`, so the frame a user reads from the same kind of file
(``pd.read_csv``: strings as ``str``, an integer column with a gap as ``float``) predicts like the training
frame did: columns in training order, string columns as the training categories (unseen values become
missing and are counted), numbers as numbers. Extra columns are dropped and reported; a missing or mistyped
column is a :class:`SchemaError` that names it.

Example
-------
>>> import pandas as pd
>>> train = pd.DataFrame({"city": pd.Categorical(["a", "b"]), "age": [30, 41]})
>>> schema = FrameSchema.from_frame(train)
>>> frame, report = schema.transform(pd.DataFrame({"age": [5.0], "city": ["z"], "id": [1]}))
>>> frame.dtypes["age"], report.unseen, report.dropped
(dtype('int64'), {'city': 1}, ('id',))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from hpm_ray.errors import DataError

Kind = Literal["number", "integer", "boolean", "category"]


class SchemaError(DataError):
    """A frame that does not fit the model's input schema (missing column, wrong type)."""


@dataclass(frozen=True)
class ColumnSpec:
    """One input column: its kind, the training categories (``category``), and whether training had gaps."""

    name: str
    kind: Kind
    optional: bool = False
    categories: tuple = ()


@dataclass(frozen=True)
class Conformance:
    """What :meth:`FrameSchema.transform` did besides converting: dropped columns, unseen values per column."""

    dropped: tuple[str, ...] = ()
    unseen: dict[str, int] = field(default_factory=dict)


def _kind(s: pd.Series) -> Kind:
    if isinstance(s.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
    ):
        return "category"
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    return "integer" if pd.api.types.is_integer_dtype(s) else "number"


@dataclass(frozen=True)
class FrameSchema:
    """The input columns of a model in training order; build it with :meth:`from_frame`."""

    columns: tuple[ColumnSpec, ...]

    @classmethod
    def from_frame(cls, X: pd.DataFrame) -> FrameSchema:
        """Learn the schema of a training frame (string columns must already be pandas categoricals or strings)."""
        specs = []
        for name in X.columns:
            s = X[name]
            kind = _kind(s)
            cats: tuple = ()
            if kind == "category":
                levels = (
                    s.cat.categories
                    if isinstance(s.dtype, pd.CategoricalDtype)
                    else pd.Index(s.dropna().unique()).sort_values()
                )
                cats = tuple(levels.tolist())
            specs.append(ColumnSpec(str(name), kind, bool(s.isna().any()), cats))
        return cls(tuple(specs))

    @classmethod
    def numeric(cls, names: list[str]) -> FrameSchema:
        """Every column a number: what a model registered before schemas was fed."""
        return cls(tuple(ColumnSpec(str(n), "number") for n in names))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_dict(self) -> dict:
        """JSON-ready form, stored in the MLflow model's metadata so servers can read it without the pickle."""
        return {
            "columns": [
                {"name": c.name, "kind": c.kind, "optional": c.optional, "categories": list(c.categories)}
                for c in self.columns
            ]
        }

    @classmethod
    def from_dict(cls, d: dict) -> FrameSchema:
        return cls(
            tuple(ColumnSpec(c["name"], c["kind"], bool(c["optional"]), tuple(c["categories"])) for c in d["columns"])
        )

    def transform(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, Conformance]:
        """``frame`` as the model saw its training rows, and what was dropped or unseen on the way."""
        if list(frame.columns) == self.names and all(_fits(frame[c.name].dtype, c) for c in self.columns):
            return frame, Conformance()  # already in training form (a server's parser built it): nothing to do
        absent = [c.name for c in self.columns if c.name not in frame.columns and not c.optional]
        if absent:
            raise SchemaError(
                f"input lacks column(s) {', '.join(map(repr, absent[:5]))}; the model takes {len(self.columns)} columns"
            )
        n = len(frame)
        out, unseen = {}, {}
        for c in self.columns:
            raw = frame[c.name] if c.name in frame.columns else pd.Series(np.nan, index=frame.index, dtype=float)
            if c.kind == "category":
                out[c.name], n_unseen = _to_category(raw, c)
                if n_unseen:
                    unseen[c.name] = n_unseen
            elif c.kind == "boolean":
                out[c.name] = _to_boolean(raw, c.name)
            else:
                out[c.name] = _to_number(raw, c)
        dropped = tuple(str(x) for x in frame.columns if x not in {c.name for c in self.columns})
        result = pd.DataFrame(out, index=frame.index) if n else pd.DataFrame(out)
        return result, Conformance(dropped, unseen)

    def raw(self, X: pd.DataFrame) -> pd.DataFrame:
        """Training-form rows as a file would hold them (categories as plain values): an input example."""
        return pd.DataFrame(
            {
                c.name: (X[c.name].astype(object).where(X[c.name].notna(), None) if c.kind == "category" else X[c.name])
                for c in self.columns
            },
            index=X.index,
        )


_DTYPES = {"number": np.dtype(float), "integer": np.dtype(np.int64), "boolean": np.dtype(bool)}


def _fits(dtype, c: ColumnSpec) -> bool:
    if c.kind == "category":
        return isinstance(dtype, pd.CategoricalDtype) and tuple(dtype.categories) == c.categories
    return dtype == _DTYPES[c.kind]


def _to_category(raw: pd.Series, c: ColumnSpec) -> tuple[pd.Series, int]:
    values = raw.astype(object) if isinstance(raw.dtype, pd.CategoricalDtype) else raw
    cat = pd.Series(pd.Categorical(values, dtype=pd.CategoricalDtype(list(c.categories))), index=raw.index, name=c.name)
    lost = cat.isna() & values.notna()
    if lost.any():  # a number sent for a column of numeric-looking strings ("7" in training, 7 or 7.0 now)
        text = {_text(v): v for v in c.categories}
        cat[lost] = [text.get(_text(v), np.nan) for v in values[lost]]
    return cat, int((cat.isna() & values.notna()).sum())


def _text(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _to_number(raw: pd.Series, c: ColumnSpec) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw) or not (
        pd.api.types.is_numeric_dtype(raw) or raw.dtype == object or pd.api.types.is_string_dtype(raw)
    ):
        raise SchemaError(f"column {c.name!r} must hold numbers; got {raw.dtype}")
    num = pd.to_numeric(raw, errors="coerce") if not pd.api.types.is_numeric_dtype(raw) else raw
    bad = num.isna() & raw.notna()
    if bad.any():
        raise SchemaError(f"column {c.name!r} must hold numbers; got {raw[bad].iloc[0]!r}")
    values = num.to_numpy(dtype=float)
    if c.kind == "integer":
        finite = values[~np.isnan(values)]
        if (finite != np.round(finite)).any():
            raise SchemaError(
                f"column {c.name!r} takes whole numbers; got {float(finite[finite != np.round(finite)][0]):g}"
            )
        if not np.isnan(values).any():
            return pd.Series(values.astype(np.int64), index=raw.index, name=c.name)
    return pd.Series(values, index=raw.index, name=c.name)


# 1 and 0 (and numpy's) find True and False: they hash and compare equal.
_TRUTH = {True: True, False: False, "true": True, "false": False, "True": True, "False": False}


def _to_boolean(raw: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype(bool)
    try:
        mapped = [np.nan if pd.isna(v) else _TRUTH[v] for v in raw]
    except (KeyError, TypeError):
        raise SchemaError(f"column {name!r} takes true/false values") from None
    s = pd.Series(mapped, index=raw.index, name=name, dtype=object)
    return s.astype(bool) if not s.isna().any() else s
