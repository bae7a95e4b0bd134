"""What a retrain runs: HPM distillation (``"distill"``, the default) or a user callable (``"module:function"``).

A callable takes the retraining rows ``(X, y)`` and returns a fitted classifier with ``predict_proba`` and
``classes_`` (any scikit-learn classifier does). hpm-ray holds out a stratified test block first: the callable
never sees it, the gates read its metrics on it, and it becomes the model's drift reference, so a user pipeline
is judged exactly like a distilled one.
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


def fit_callable(fn: Callable, X: pd.DataFrame, y, test_size: float, seed: int):
    """Fit ``fn`` on all rows but a stratified held-out block; returns ``(model, X_fit, X_test, y_test)``."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    X_fit, X_test, y_fit, y_test = train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)
    model = fn(X_fit.reset_index(drop=True), y_fit)
    if not callable(getattr(model, "predict_proba", None)) or not hasattr(model, "classes_"):
        raise DataError(f"the pipeline returned {type(model).__name__}, not a fitted classifier with predict_proba")
    return model, X_fit.reset_index(drop=True), X_test.reset_index(drop=True), y_test
