"""An Explainable Boosting Machine student: a GAM of boosted per-feature shape functions and a few pairs.

Soft targets enter as in the other students (:func:`~hpm_ray.distill.soft_targets.expand_rows`): every row
becomes one weighted copy per class, and EBM's weighted log loss on the copies is the cross-entropy to the
soft target. The hard-label twin is the same classifier on the real rows. Two details keep the pair fair:
- EBM stops early on an inner validation share of the rows it is given; here that share is drawn over
  *real* rows and a row's copies go to the same side (``bags``), so early stopping never scores a row whose
  other copy it trained on, and both twins hold out the same share of real rows;
- ``min_samples_leaf`` and ``min_cat_samples`` count rows, so they are scaled by the copies per real row
  (leaves and categories need as many real rows as the twin's; compare ``real_rows_leaf`` for trees).
Multiclass EBMs get no pairwise terms: they cost most of the fit and interpret cannot display them.
Needs the optional package ``interpret-core`` (``pip install 'hpm-ray[ebm]'``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpm_ray.distill.presets import _named
from hpm_ray.distill.soft_targets import expand_rows
from hpm_ray.distill.students import OptionalPackage, SoftStudent

VALIDATION_SHARE = 0.15  # EBM's own default inner validation share, here of real rows


def grouped_bags(labels: np.ndarray, n_bags: int, share: float, seed: int) -> np.ndarray:
    """(n, n_bags) EBM bag matrix over real rows: -1 = inner validation, +1 = training; stratified by label.

    Each bag holds out ``round(share * n_c)`` rows of every class ``c`` (at least one when the class has two
    or more rows), drawn independently per bag.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    bags = np.ones((len(labels), n_bags), dtype=np.int8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx) - 1, max(1, round(share * len(idx)))) if len(idx) > 1 else 0
        for b in range(n_bags):
            bags[rng.choice(idx, k, replace=False), b] = -1
    return bags


# Protocol shape: SoftStudent (scikit-learn __init__ storing each hyperparameter; suggest, _fit_soft, _proba, size).
class EBMStudent(SoftStudent):
    """Explainable Boosting Machine on weighted soft rows (``interactions`` pairwise terms, 0 = a pure GAM).

    Two outer bags (interpret's default is 14) and one core per fit keep a study of several fits affordable;
    ``max_rounds`` caps a fit that early stopping would let run on.

    Examples
    --------
    >>> from hpm_ray.distill.soft_targets import soft_targets
    >>> q = soft_targets(teacher_proba, y, 2.0, 0.7)  # doctest: +SKIP
    >>> student = EBMStudent(interactions=0).fit(X, y, soft_targets=q)  # doctest: +SKIP
    >>> hpm_ray.distill.export.ebm_shapes(student)["terms"][0]["scores"]  # a feature's log-odds  # doctest: +SKIP
    """

    name = "ebm"
    requires = OptionalPackage("interpret", "interpret-core", ">=0.7.8,<0.8", "ebm")

    def __init__(
        self,
        learning_rate: float = 0.04,
        interactions: int = 5,
        max_bins: int = 256,
        min_samples_leaf: int = 4,
        outer_bags: int = 2,
        max_rounds: int = 5000,
        random_state: int = 0,
    ):
        self.learning_rate = learning_rate
        self.interactions = interactions
        self.max_bins = max_bins
        self.min_samples_leaf = min_samples_leaf
        self.outer_bags = outer_bags
        self.max_rounds = max_rounds
        self.random_state = random_state

    @staticmethod
    def suggest(trial) -> dict[str, Any]:
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.15, log=True),
            "interactions": trial.suggest_int("interactions", 0, 15),
            "max_bins": trial.suggest_int("max_bins", 16, 256, log=True),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 2, 100, log=True),
        }

    def _fit_soft(self, X, q):
        from interpret.glassbox import ExplainableBoostingClassifier

        X = _named(X)
        rows, labels, w = expand_rows(q)
        copies = len(rows) / len(q)  # 1 for the hard-label twin, up to k for soft targets
        bags = grouped_bags(q.argmax(axis=1), int(self.outer_bags), VALIDATION_SHARE, self.random_state)
        self.model_ = ExplainableBoostingClassifier(
            learning_rate=self.learning_rate,
            # multiclass pairs cost most of the fit and interpret cannot show them: main effects only there
            interactions=int(self.interactions) if q.shape[1] == 2 else 0,
            max_bins=int(self.max_bins),
            min_samples_leaf=math.ceil(int(self.min_samples_leaf) * copies),
            min_cat_samples=math.ceil(10 * copies),  # EBM's default of 10 rows, counted in real rows
            outer_bags=int(self.outer_bags),
            max_rounds=int(self.max_rounds),
            n_jobs=1,  # one Ray task, one core
            random_state=self.random_state,
        )
        self.model_.fit(X.iloc[rows], labels, sample_weight=w, bags=bags[rows])

    def _proba(self, X):
        p = self.model_.predict_proba(_named(X))
        full = np.zeros((len(p), len(self.classes_)))
        full[:, self.model_.classes_.astype(int)] = p  # a class with no weight anywhere gets probability 0
        return full

    def size(self) -> int:
        return int(sum(np.size(s) for s in self.model_.term_scores_))  # cells of the shape tables
