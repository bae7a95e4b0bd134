"""Student presets for constrained deployment: the models regulated users may ship, trained on soft targets.

- ``scorecard``: logistic regression on binned features (quantile bins per numeric feature, one bin per
  category, a bin for missing values), one-hot encoded so every bin gets its own points; soft targets by
  weighted row duplication. Exported as a points table (:mod:`hpm_ray.distill.export`).
- ``tree4``: a decision tree of depth <= 4 whose leaves hold the mean target probability of their rows.
  ``soft_mode`` says what the splits are grown on:
  ``"logit"`` (default): regression on the targets' log-odds (centred log-probabilities when multiclass);
  ``"regression"``: regression on the target probabilities; ``"duplicate"``: Gini on weighted duplicated
  rows. "regression" and "duplicate" grow the same splits in exact arithmetic (the squared-error gain on
  probability vectors equals the Gini gain on the duplicated rows). On hard labels all three grow the same
  tree (the log-odds of a one-hot target are affine in it), so the hard-label twin is the ordinary tree;
  on soft targets the log-odds scale separates the risky tail that ranking (AUC) depends on, and it
  measured best on the credit data (bench/interpretable.py). Exported as rules.
- ``gbm20``: LightGBM with <= 20 trees of <= 8 leaves (cross-entropy objective on the soft probability).
Size limits are checked at ``fit`` (scikit-learn style) and raise :class:`~hpm_ray.errors.SpecError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hpm_ray.distill.soft_targets import expand_rows
from hpm_ray.distill.students import (
    LightGBMStudent,
    SoftStudent,
    _categorical_columns,
    real_rows_leaf,
)
from hpm_ray.errors import SpecError

MAX_TREE_DEPTH = 4
MAX_GBM_TREES = 20
MAX_GBM_LEAVES = 8


def _numeric(col: pd.Series) -> np.ndarray:
    """A numeric column as float64 with NaN for missing (also for pandas' nullable Int64/Float64)."""
    return pd.to_numeric(col).astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def _named(X) -> pd.DataFrame:
    """A DataFrame with string column names (the names the exported tables use)."""
    X = pd.DataFrame(X)
    return X.set_axis([str(c) for c in X.columns], axis=1)


class Binner:
    """Per-feature bins fitted on training rows; ``transform`` gives the bin index of every cell.

    Numeric feature: edges e_1 < ... < e_m (training quantiles taken at observed values, or every distinct
    value but the largest when there are at most ``n_bins`` of them); bin j holds e_j < x <= e_{j+1} with e_0 = -inf,
    e_{m+1} = +inf, and bin m + 1 holds missing values. Categorical feature: one bin per training category,
    then one for missing or unseen categories.
    """

    def __init__(self, n_bins: int):
        self.n_bins = n_bins

    def fit(self, X: pd.DataFrame) -> Binner:
        cats = set(_categorical_columns(X))
        self.features_: list[dict[str, Any]] = []
        for c in X.columns:
            if c in cats:
                levels = sorted(pd.Series(X[c]).dropna().astype(str).unique().tolist())
                self.features_.append({"feature": str(c), "type": "categorical", "categories": levels})
                continue
            x = _numeric(X[c])
            x = x[np.isfinite(x)]
            uniq = np.unique(x)
            if len(uniq) <= self.n_bins:
                edges = uniq[:-1]
            else:
                # "lower": every edge is a value seen in training (<= 50000, not <= 49396.8): a readable table
                edges = np.unique(np.quantile(x, np.linspace(0, 1, self.n_bins + 1)[1:-1], method="lower"))
                edges = edges[edges < uniq[-1]]  # a last edge at the maximum would leave an empty top bin
            self.features_.append({"feature": str(c), "type": "numeric", "edges": edges.tolist()})
        self.n_columns_ = [self.bins_of(f) for f in self.features_]
        self.offsets_ = np.concatenate([[0], np.cumsum(self.n_columns_)]).astype(int)
        return self

    @staticmethod
    def bins_of(feature: dict[str, Any]) -> int:
        """Number of bins of a fitted feature, missing bin included."""
        return len(feature["edges"]) + 2 if feature["type"] == "numeric" else len(feature["categories"]) + 1

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """(n, n_features) bin indices, local to each feature."""
        out = np.empty((len(X), len(self.features_)), dtype=np.int64)
        for j, f in enumerate(self.features_):
            out[:, j] = bin_index(f, X[f["feature"]])
        return out

    def one_hot(self, X: pd.DataFrame):
        """Sparse (n, total bins) indicator matrix: the logistic regression's design."""
        from scipy import sparse

        idx = self.transform(X) + self.offsets_[:-1]
        n, k = idx.shape
        return sparse.csr_matrix(
            (np.ones(n * k), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, int(self.offsets_[-1]))
        )


def bin_index(feature: dict[str, Any], col: pd.Series) -> np.ndarray:
    """Bin of every value of one column under a fitted (or exported) feature description."""
    if feature["type"] == "categorical":
        lookup = {c: i for i, c in enumerate(feature["categories"])}
        missing = len(feature["categories"])
        return np.array([missing if pd.isna(v) else lookup.get(str(v), missing) for v in col], dtype=np.int64)
    x = _numeric(col)
    edges = np.asarray(feature["edges"], dtype=float)
    idx = np.searchsorted(edges, x, side="left")  # e_{j} < x <= e_{j+1}  ->  j
    return np.where(np.isnan(x), len(edges) + 1, idx)


# Protocol shape: SoftStudent (scikit-learn __init__ storing each hyperparameter; suggest, _fit_soft, _proba, size).
class ScorecardStudent(SoftStudent):
    """Logistic regression on one-hot bins: a points scorecard (``export.scorecard``) with the same output."""

    name = "scorecard"

    def __init__(self, n_bins: int = 8, C: float = 1.0, random_state: int = 0):
        self.n_bins = n_bins
        self.C = C
        self.random_state = random_state

    @staticmethod
    def suggest(trial) -> dict[str, Any]:
        return {"n_bins": trial.suggest_int("n_bins", 4, 20), "C": trial.suggest_float("C", 1e-3, 10.0, log=True)}

    def _fit_soft(self, X, q):
        from sklearn.linear_model import LogisticRegression

        if int(self.n_bins) < 2:
            raise SpecError(f"scorecard n_bins must be >= 2, got {self.n_bins}")
        X = _named(X)
        self.binner_ = Binner(int(self.n_bins)).fit(X)
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        rows, labels, w = expand_rows(q)
        # Newton on the sparse one-hot design: a few iterations where lbfgs needs hundreds (measured 0.7 s vs 17 s)
        self.model_ = LogisticRegression(
            C=self.C, solver="newton-cholesky", max_iter=200, tol=1e-6, random_state=self.random_state
        )
        self.model_.fit(self.binner_.one_hot(X)[rows], labels, sample_weight=w)

    def _proba(self, X):
        return self.model_.predict_proba(self.binner_.one_hot(_named(X)))

    def size(self) -> int:
        return int(self.binner_.offsets_[-1])  # bins = rows of the points table


SOFT_MODES = ("logit", "regression", "duplicate")
_LOG_EPS = 1e-3  # log-odds of a hard label: +-6.9; keeps one-hot targets from dominating the squared error


def log_ratio(q: np.ndarray) -> np.ndarray:
    """Centred log-probabilities (binary: +-logit / 2 per column): the scale tree4 grows its splits on."""
    z = np.log(np.clip(q, _LOG_EPS, 1.0))
    return z - z.mean(axis=1, keepdims=True)


# Protocol shape: SoftStudent (scikit-learn __init__ storing each hyperparameter; suggest, _fit_soft, _proba, size).
class Tree4Student(SoftStudent):
    """A decision tree of depth <= 4 whose leaves hold the mean target probability of their rows."""

    name = "tree4"

    def __init__(
        self,
        max_depth: int = MAX_TREE_DEPTH,
        min_samples_leaf: int = 100,
        soft_mode: str = "logit",
        random_state: int = 0,
    ):
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.soft_mode = soft_mode
        self.random_state = random_state

    @staticmethod
    def suggest(trial) -> dict[str, Any]:
        return {
            "max_depth": trial.suggest_int("max_depth", 3, MAX_TREE_DEPTH),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 20, 1000, log=True),
        }

    def encode(self, X) -> np.ndarray:
        """Numeric columns as floats, categories as their training code; missing/unseen -> NaN (trees route it)."""
        X = _named(X)
        cols = []
        for c in self.feature_names_in_:
            if c in self.categories_:
                lookup = {v: float(i) for i, v in enumerate(self.categories_[c])}
                cols.append(np.array([np.nan if pd.isna(v) else lookup.get(str(v), np.nan) for v in X[c]]))
            else:
                cols.append(_numeric(X[c]))
        return np.column_stack(cols)

    def _fit_soft(self, X, q):
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

        if not 1 <= int(self.max_depth) <= MAX_TREE_DEPTH:
            raise SpecError(f"tree4 max_depth must be in [1, {MAX_TREE_DEPTH}], got {self.max_depth}")
        if self.soft_mode not in SOFT_MODES:
            raise SpecError(f"tree4 soft_mode must be one of {', '.join(SOFT_MODES)}, got {self.soft_mode!r}")
        X = _named(X)
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        self.categories_ = {c: sorted(X[c].dropna().astype(str).unique().tolist()) for c in _categorical_columns(X)}
        Z = self.encode(X)
        kw = {
            "max_depth": int(self.max_depth),
            "min_samples_leaf": int(self.min_samples_leaf),
            "random_state": self.random_state,
        }
        if self.soft_mode == "duplicate":  # leaves count real rows, not weighted copies
            rows, labels, w = expand_rows(q)
            kw |= real_rows_leaf(self.min_samples_leaf, len(q))
            self.tree_model_ = DecisionTreeClassifier(**kw).fit(Z[rows], labels, sample_weight=w)
        elif self.soft_mode == "regression":
            self.tree_model_ = DecisionTreeRegressor(**kw).fit(Z, q)
        else:
            self.tree_model_ = DecisionTreeRegressor(**kw).fit(Z, log_ratio(q))
            leaf = self.tree_model_.apply(Z)
            sums = np.zeros((self.tree_model_.tree_.node_count, q.shape[1]))
            np.add.at(sums, leaf, q)
            self.leaf_q_ = sums  # per-node sum of target probabilities; normalised in leaf_values

    def leaf_values(self) -> np.ndarray:
        """(node_count, k) class probabilities stored in every node (leaves are what predictions use)."""
        if self.soft_mode == "logit":
            total = self.leaf_q_.sum(axis=1, keepdims=True)
            return np.divide(self.leaf_q_, total, out=np.zeros_like(self.leaf_q_), where=total > 0)
        v = self.tree_model_.tree_.value
        v = v[:, :, 0] if self.soft_mode == "regression" else v[:, 0, :]
        v = np.clip(v, 0.0, None)
        full = np.zeros((len(v), len(self.classes_)))
        if self.soft_mode == "duplicate":  # the classifier only knows the labels that had weight
            full[:, self.tree_model_.classes_.astype(int)] = v
        else:
            full[:] = v
        return full / full.sum(axis=1, keepdims=True)

    def _proba(self, X):
        return self.leaf_values()[self.tree_model_.apply(self.encode(X))]

    def size(self) -> int:
        return int(self.tree_model_.get_n_leaves())  # leaves = exported rules


# Protocol shape: SoftStudent (scikit-learn __init__ storing each hyperparameter; suggest, _fit_soft, _proba, size).
class GBM20Student(LightGBMStudent):
    """LightGBM capped at 20 trees of at most 8 leaves; binary soft targets via the cross-entropy objective."""

    name = "gbm20"

    def __init__(
        self,
        n_estimators: int = MAX_GBM_TREES,
        num_leaves: int = MAX_GBM_LEAVES,
        learning_rate: float = 0.2,
        min_child_samples: int = 20,
        random_state: int = 0,
    ):
        super().__init__(
            n_estimators=n_estimators,
            num_leaves=num_leaves,
            learning_rate=learning_rate,
            min_child_samples=min_child_samples,
            random_state=random_state,
        )

    @staticmethod
    def suggest(trial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 5, MAX_GBM_TREES),
            "num_leaves": trial.suggest_int("num_leaves", 2, MAX_GBM_LEAVES),
            "learning_rate": trial.suggest_float("learning_rate", 0.05, 0.5, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 300, log=True),
        }

    def _fit_soft(self, X, q):
        if not 1 <= int(self.n_estimators) <= MAX_GBM_TREES:
            raise SpecError(f"gbm20 n_estimators must be in [1, {MAX_GBM_TREES}], got {self.n_estimators}")
        if not 2 <= int(self.num_leaves) <= MAX_GBM_LEAVES:
            raise SpecError(f"gbm20 num_leaves must be in [2, {MAX_GBM_LEAVES}], got {self.num_leaves}")
        super()._fit_soft(X, q)

    def max_leaves(self) -> int:
        """Largest leaf count over the fitted trees (the constraint the tests check)."""
        df = self.model_.booster_.trees_to_dataframe()
        return int(df[df.left_child.isna()].groupby("tree_index").size().max())


# Registered by name in :mod:`hpm_ray.distill.catalog`, next to the built-in students.
PRESETS: tuple[type[SoftStudent], ...] = (ScorecardStudent, Tree4Student, GBM20Student)
