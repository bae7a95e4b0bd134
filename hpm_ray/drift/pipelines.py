"""What a retrain runs: HPM distillation (``"distill"``, the default) or a user callable (``"module:function"``).

A callable takes the fit rows ``(X, y)`` and returns a fitted classifier with ``predict_proba`` and
``classes_`` (any scikit-learn classifier does). It never sees the held-out block of the retrain data
(:class:`~hpm_ray.drift.retrain_data.RetrainData`): the gates read its metrics there, and the block becomes the
model's drift reference, so a user pipeline is judged exactly like a distilled one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import pandas as pd

from hpm_ray.errors import DataError, SpecError

DISTILL = "distill"


def load_pipeline(ref: str) -> Callable | None:
    """``"distill"`` -> None (the built-in pipeline); ``"module:function"`` -> that callable (SpecError if not)."""
    if ref == DISTILL:
        return None
    module, sep, name = ref.partition(":")
    if not sep or not module or not name:
        raise SpecError(f"pipeline must be 'distill' or 'module:function', got {ref!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"pipeline {ref!r}: cannot import it ({type(exc).__name__}: {exc})") from None
    if not callable(fn):
        raise SpecError(f"pipeline {ref!r} is not callable")
    return fn


def fit_callable(fn: Callable, X_fit: pd.DataFrame, y_fit):
    """``fn(X_fit, y_fit)``, checked to be a fitted classifier (DataError if not)."""
    model = fn(X_fit, np.asarray(y_fit))
    if not callable(getattr(model, "predict_proba", None)) or not hasattr(model, "classes_"):
        raise DataError(f"the pipeline returned {type(model).__name__}, not a fitted classifier with predict_proba")
    return model
