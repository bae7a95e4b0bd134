"""The MLflow signature and input example of a registered model, rendered from its :class:`FrameSchema`.

String columns are declared ``string``; numeric and true/false columns ``Any``. MLflow refuses an ``int64``
column for ``double`` and a ``float64`` one for ``long``, yet ``pd.read_csv`` reads the same column either
way (a file of whole numbers, a file with a gap), and its ``boolean`` parsing turns JSON null into False; the
model's own preprocessing checks these columns instead (numbers, whole numbers, true/false). Columns that had
missing values in training are optional: a frame may leave them out (all missing).
"""

from __future__ import annotations

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

from hpm_ray.data.schema import FrameSchema

METADATA_KEY = "hpm_ray_input_schema"  # where FrameSchema.to_dict() sits in the MLmodel file's metadata
EXAMPLE_ROWS = 5


def input_schema(schema: FrameSchema) -> Schema:
    return Schema(
        [
            ColSpec(
                DataType.string
                if c.kind == "category" and all(isinstance(v, str) for v in c.categories)
                else AnyType(),
                c.name,
                required=not c.optional,
            )
            for c in schema.columns
        ]
    )


def input_example(schema: FrameSchema, X: pd.DataFrame) -> pd.DataFrame:
    """A few training rows as a raw file holds them; a row with a gap in an optional column when there is one."""
    rows = X.head(EXAMPLE_ROWS)
    gaps = X[[c.name for c in schema.columns if c.optional]].isna().any(axis=1)
    if gaps.any() and not gaps.loc[rows.index].any():
        rows = pd.concat([rows.iloc[:-1], X.loc[gaps[gaps].index[:1]]])
    return schema.raw(rows).reset_index(drop=True)


def model_signature(python_model) -> ModelSignature:
    """Inputs from ``python_model.schema``, outputs from its ``output_schema()``: both known without predicting."""
    return ModelSignature(inputs=input_schema(python_model.schema), outputs=python_model.output_schema())
