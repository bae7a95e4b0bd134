"""A pyfunc wrapper for any fitted classifier with ``predict_proba``, its preprocessing inside.

Input: a raw frame as ``pd.read_csv`` reads the kind of file the model was trained on; the model's
:class:`~hpm_ray.data.schema.FrameSchema` puts columns in training order, string columns on the training
categories (unseen values become missing, counted in a warning) and drops extra columns.
Output, one row per input row: ``prediction`` (the class label) and ``proba_<label>`` columns (probabilities
summing to 1), so HTTP clients, A/B metrics (confidence = max probability) and feedback accuracy all read the
same frame, in-process, in the A/B app and in ``mlflow models serve`` alike.
"""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, DataType, Schema

from hpm_ray.data.schema import FrameSchema, SchemaError
from hpm_ray.registry.signature import METADATA_KEY

_log = logging.getLogger(__name__)


class SchemaPyfunc(mlflow.pyfunc.PythonModel):
    """Base of the pyfuncs hpm-ray registers: holds the training frame's schema and conforms inputs to it."""

    schema: FrameSchema

    def conform(self, model_input: pd.DataFrame) -> pd.DataFrame:
        """``model_input`` in training form; unseen categories are logged, not errors.

        A frame that does not fit is an ``MlflowException`` (invalid parameter): MLflow's scoring server answers
        it with HTTP 400 and this message, as it does its own schema errors.
        """
        try:
            X, report = self.schema.transform(model_input)
        except SchemaError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        if report.unseen:
            _log.warning(
                "unseen categories mapped to missing: %s", ", ".join(f"{k}={v}" for k, v in report.unseen.items())
            )
        return X

    def mlmodel_metadata(self) -> dict:
        """What goes into the MLmodel file's ``metadata``: the input schema (and what a subclass adds), readable
        without loading the model (a router of the ``deployments`` placement reads only this)."""
        return {METADATA_KEY: self.schema.to_dict()}

    def __setstate__(self, state: dict) -> None:
        if "schema" not in state:  # a version registered before schemas: it was fed numeric columns by name
            state["schema"] = FrameSchema.numeric(state.pop("feature_names"))
        self.__dict__.update(state)


class ClassifierPyfunc(SchemaPyfunc):
    """Holds the fitted estimator itself (pickled with the model) and the schema of its training frame.

    ``train`` is the training frame (or its :class:`FrameSchema`): only its columns and types are kept.
    """

    def __init__(self, estimator, train: pd.DataFrame | FrameSchema, classes: list | None = None):
        self.estimator = estimator
        self.schema = train if isinstance(train, FrameSchema) else FrameSchema.from_frame(train)
        self.classes = list(classes if classes is not None else getattr(estimator, "classes_", [0, 1]))

    def load_context(self, context) -> None:
        """A loaded pyfunc serves small batches: predict on one thread (``n_jobs=1``).

        Concurrency comes from requests; a thread team per call costs more than the trees on a few rows
        (LightGBM, 100 trees, 2 cores: 6-8 ms of CPU per 1-100 row call with its default team, ~1 ms on one thread).
        """
        params = self.estimator.get_params() if hasattr(self.estimator, "get_params") else {}
        if "n_jobs" in params:
            self.estimator.set_params(n_jobs=1)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        X = self.conform(model_input)
        proba = np.asarray(self.estimator.predict_proba(X), dtype=float)
        out = pd.DataFrame(proba, columns=[f"proba_{c}" for c in self.classes], index=model_input.index)
        out.insert(0, "prediction", np.asarray(self.classes)[proba.argmax(axis=1)])
        return out

    def output_schema(self) -> Schema:
        label = np.asarray(self.classes).dtype
        kind = (
            "boolean"
            if label.kind == "b"
            else "long"
            if label.kind in "iu"
            else "double"
            if label.kind == "f"
            else "string"
        )
        return Schema([ColSpec(kind, "prediction"), *(ColSpec(DataType.double, f"proba_{c}") for c in self.classes)])
