"""Student estimators that really learn from soft targets, behind one small plug-in protocol.

Every student is a scikit-learn classifier whose ``fit(X, y, soft_targets=None)`` trains on an (n, k)
target matrix; with ``soft_targets=None`` it trains on one-hot labels, which is exactly the hard-label twin.
How the soft target enters the loss:
- LightGBM / XGBoost, binary: cross-entropy / logistic loss with the probability itself as the label;
- everything multiclass, logistic regression and the decision tree: weighted row duplication
  (:func:`~hpm_ray.distill.soft_targets.expand_rows`), i.e. the cross-entropy to the soft target.
A new student type subclasses :class:`SoftStudent` and calls :func:`hpm_ray.distill.catalog.register_student`.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from hpm_ray.distill.soft_targets import expand_rows, one_hot


def _categorical_columns(X: pd.DataFrame) -> list[str]:
    return [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])]


def _take(X, rows: np.ndarray):
    return X.iloc[rows] if hasattr(X, "iloc") else np.asarray(X)[rows]


def real_rows_leaf(min_samples_leaf: int, n_rows: int) -> dict[str, Any]:
    """Tree leaf-size arguments that count real rows when rows are duplicated by class with weights.

    A soft row becomes up to k weighted copies (weights summing to 1), so ``min_samples_leaf`` would count
    copies: soft trees got leaves of half as many real rows as their hard-label twins. Every copy of a row
    lands in the same leaf, so a minimum leaf *weight* of ``min_samples_leaf`` (as a fraction of the total
    weight, ``n_rows``) is exactly a minimum of real rows, and the same rule as before on one-hot labels.
    """
    return {"min_samples_leaf": 1, "min_weight_fraction_leaf": min(0.5, int(min_samples_leaf) / max(n_rows, 1))}


class OptionalPackage(NamedTuple):
    """A package a student type needs beyond hpm-ray's own dependencies (an extra in pyproject.toml)."""

    module: str  # what the student imports
    distribution: str  # what pip installs, pinned in a registered model's requirements
    bounds: str  # the versions it was tested with
    extra: str  # hpm-ray's extra that installs it


class SoftStudent(ClassifierMixin, BaseEstimator, ABC):
    """Base class: label bookkeeping and the soft/hard switch; subclasses implement ``_fit_soft``/``_proba``."""

    name: ClassVar[str] = ""
    requires: ClassVar[OptionalPackage | None] = None

    def fit(self, X, y, soft_targets: np.ndarray | None = None):
        y = np.asarray(y).astype(int)
        if soft_targets is None:
            q = one_hot(y, int(y.max()) + 1)
        else:
            q = np.asarray(soft_targets, dtype=float)
        self.classes_ = np.arange(q.shape[1])
        self.n_features_in_ = X.shape[1]
        self._fit_soft(X, q)
        return self

    def predict_proba(self, X) -> np.ndarray:
        p = np.asarray(self._proba(X), dtype=float)
        if p.ndim == 1:
            p = np.column_stack([1.0 - p, p])
        return np.clip(p, 0.0, 1.0)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def size_bytes(self) -> int:
        return len(pickle.dumps(self))

    # --- plug-in surface: what a new student type implements ---
    @staticmethod
    @abstractmethod
    def suggest(trial) -> dict[str, Any]:
        """Optuna search space of the type's hyperparameters."""

    @abstractmethod
    def size(self) -> int:
        """Model complexity in the type's natural unit (trees, nodes, coefficients)."""

    @abstractmethod
    def _fit_soft(self, X, q: np.ndarray) -> None:
        """Fit on features ``X`` and an (n, k) target-probability matrix ``q``."""

    @abstractmethod
    def _proba(self, X) -> np.ndarray:
        """Class probabilities (n, k), or (n,) of the positive class for binary tasks."""


# Protocol shape: SoftStudent (scikit-learn __init__ storing each hyperparameter; suggest, _fit_soft, _proba, size).
class LogisticStudent(SoftStudent):
    """Impute + one-hot + scale, then multinomial logistic regression on duplicated, weighted rows."""

    name = "logreg"

    def __init__(self, C: float = 1.0, random_state: int = 0):
        self.C = C
        self.random_state = random_state

    @staticmethod
    def suggest(trial) -> dict[str, Any]:
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}

    def _fit_soft(self, X, q):
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline, make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        X = pd.DataFrame(X)
        cat = _categorical_columns(X)
        num = [c for c in X.columns if c not in cat]
        prep = ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
                (
                    "cat",
                    make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
                    cat,
                ),
            ]
        )
        self.model_ = Pipeline(
            [("prep", prep), ("clf", LogisticRegression(C=self.C, max_iter=300, random_state=self.random_state))]
        )
        rows, labels, w = expand_rows(q)
        self.model_.fit(_take(X, rows), labels, clf__sample_weight=w)

    def _proba(self, X):
        return self.model_.predict_proba(pd.DataFrame(X))

    def size(self) -> int:
        return int(self.model_[-1].coef_.size)


# Protocol shape: SoftStudent (scikit-learn __init__ storing each hyperparameter; suggest, _fit_soft, _proba, size).
class TreeStudent(SoftStudent):
    """Ordinal-encoded categories (NaN kept: sklearn trees route missing values), weighted soft rows.

    A leaf's probability is the weighted mean of its rows' soft targets.
    """

    name = "tree"

    def __init__(self, max_depth: int = 6, min_samples_leaf: int = 20, random_state: int = 0):
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    @staticmethod
    def suggest(trial) -> dict[str, Any]:
        return {
            "max_depth": trial.suggest_int("max_depth", 2, 10),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 5, 200, log=True),
        }

    def _fit_soft(self, X, q):
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OrdinalEncoder
        from sklearn.tree import DecisionTreeClassifier

        X = pd.DataFrame(X)
        cat = _categorical_columns(X)
        prep = ColumnTransformer(
            [
                (
                    "cat",
                    OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1),
                    cat,
                )
            ],
            remainder="passthrough",
        )
        tree = DecisionTreeClassifier(
            max_depth=self.max_depth, **real_rows_leaf(self.min_samples_leaf, len(q)), random_state=self.random_state
        )
        self.model_ = Pipeline([("prep", prep), ("clf", tree)])
        rows, labels, w = expand_rows(q)
        self.model_.fit(_take(X, rows), labels, clf__sample_weight=w)

    def _proba(self, X):
        return self.model_.predict_proba(pd.DataFrame(X))

    def size(self) -> int:
        return int(self.model_[-1].tree_.node_count)


# Protocol shape: SoftStudent (scikit-learn __init__ storing each hyperparameter; suggest, _fit_soft, _proba, size).
class LightGBMStudent(SoftStudent):
    """Binary: ``objective="cross_entropy"`` with the soft probability as label; multiclass: weighted rows."""

    name = "lgbm"

    def __init__(
        self,
        n_estimators: int = 100,
        num_leaves: int = 31,
        learning_rate: float = 0.1,
        min_child_samples: int = 20,
        random_state: int = 0,
    ):
        self.n_estimators = n_estimators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.min_child_samples = min_child_samples
        self.random_state = random_state

    @staticmethod
    def suggest(trial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 20, 100),
            "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
        }

    def _params(self) -> dict:
        return dict(
            n_estimators=self.n_estimators,
            num_leaves=self.num_leaves,
            learning_rate=self.learning_rate,
            min_child_samples=self.min_child_samples,
            random_state=self.random_state,
            n_jobs=1,
            verbose=-1,
        )

    def _fit_soft(self, X, q):
        import lightgbm as lgb

        if q.shape[1] == 2:
            self.model_ = lgb.LGBMModel(objective="cross_entropy", **self._params())
            self.model_.fit(X, q[:, 1])
        else:
            self.model_ = lgb.LGBMClassifier(objective="multiclass", **self._params())
            rows, labels, w = expand_rows(q)
            self.model_.fit(_take(X, rows), labels, sample_weight=w)

    def _proba(self, X):
        return self.model_.predict(X) if len(self.classes_) == 2 else self.model_.predict_proba(X)

    def size(self) -> int:
        return int(self.model_.booster_.num_trees())


# Protocol shape: SoftStudent (scikit-learn __init__ storing each hyperparameter; suggest, _fit_soft, _proba, size).
class XGBoostStudent(SoftStudent):
    """Binary: ``binary:logistic`` on probability labels; multiclass: ``multi:softprob`` on weighted rows."""

    name = "xgb"

    def __init__(
        self,
        n_estimators: int = 100,
        max_depth: int = 4,
        learning_rate: float = 0.1,
        min_child_weight: float = 1.0,
        random_state: int = 0,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.min_child_weight = min_child_weight
        self.random_state = random_state

    @staticmethod
    def suggest(trial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 20, 100),
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
            "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 20.0, log=True),
        }

    def _params(self) -> dict:
        return dict(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            min_child_weight=self.min_child_weight,
            random_state=self.random_state,
            n_jobs=1,
            tree_method="hist",
            enable_categorical=True,
        )

    def _fit_soft(self, X, q):
        import xgboost as xgb

        if q.shape[1] == 2:
            self.model_ = xgb.XGBRegressor(objective="binary:logistic", **self._params())
            self.model_.fit(X, q[:, 1])
        else:
            self.model_ = xgb.XGBClassifier(objective="multi:softprob", **self._params())
            rows, labels, w = expand_rows(q)
            self.model_.fit(_take(X, rows), labels, sample_weight=w)

    def _proba(self, X):
        return self.model_.predict(X) if len(self.classes_) == 2 else self.model_.predict_proba(X)

    def size(self) -> int:
        per_round = 1 if len(self.classes_) == 2 else len(self.classes_)
        return int(self.model_.get_booster().num_boosted_rounds() * per_round)


# Registered by name in :mod:`hpm_ray.distill.catalog`, with the constrained presets.
BUILTIN: tuple[type[SoftStudent], ...] = (LogisticStudent, TreeStudent, LightGBMStudent, XGBoostStudent)
