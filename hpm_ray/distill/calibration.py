"""Calibrated student probabilities: undo the temperature, then a calibrator chosen on validation rows.

A student trained at temperature T on ``alpha * softmax(log p_teacher / T) + (1 - alpha) * label`` learns
log-probabilities near ``log p_teacher / T`` (exactly at alpha = 1), so multiplying its centred
log-probabilities by T gives the teacher's scale back. With alpha < 1, or a biased teacher, that alone leaves
the probabilities shifted, so one of four calibrators is then fitted on the validation rows: ``none`` (undo T
only), ``temperature`` scaling, ``sigmoid`` (Platt) or ``isotonic`` - the one with the lowest Brier score
cross-validated over the validation rows (a calibrator is never scored on the rows it was fitted on).
The chosen one is refitted on every validation row with scikit-learn's ``CalibratedClassifierCV`` around a
``FrozenEstimator``. Monotone in each class's score, it keeps the ranking (AUC, KS) of binary students
(isotonic can tie scores). The test split is never used.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

METHODS = ("none", "temperature", "sigmoid", "isotonic")
_EPS = 1e-12


def unsoftened_scores(proba: np.ndarray, temperature: float) -> np.ndarray:
    """T x centred log-probabilities: (n, 1) log-odds of class 1 when binary, else (n, k) logits.

    softmax of these scores undoes ``soften(p, T)`` exactly: softmax(T * log softmax(log p / T)) = p.
    """
    z = np.log(np.clip(np.asarray(proba, dtype=float), _EPS, 1.0))
    z = temperature * (z - z.mean(axis=1, keepdims=True))
    return z[:, 1:] - z[:, :1] if z.shape[1] == 2 else z


def scores_to_proba(z: np.ndarray) -> np.ndarray:
    """The inverse of :func:`unsoftened_scores` at T = 1: sigmoid of log-odds, or softmax of logits."""
    z = np.asarray(z, dtype=float)
    if z.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.column_stack([1.0 - p1, p1])
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ScoreClassifier(ClassifierMixin, BaseEstimator):
    """The identity classifier on precomputed scores: ``decision_function(Z)`` is ``Z``.

    Lets scikit-learn's calibrators be fitted and compared on validation scores computed once, instead of
    predicting the student again for every fold and method.
    """

    def fit(self, Z, y):
        self.classes_ = np.unique(np.asarray(y).astype(int))
        return self

    def decision_function(self, Z):
        Z = np.asarray(Z, dtype=float)
        return Z[:, 0] if Z.shape[1] == 1 else Z  # binary: one score per row, as scikit-learn expects

    def predict_proba(self, Z):
        return scores_to_proba(Z)

    def predict(self, Z):
        return self.classes_[self.predict_proba(Z).argmax(axis=1)]


def _fit_calibrator(method: str, Z: np.ndarray, y: np.ndarray, classes: np.ndarray):
    """A fitted ``CalibratedClassifierCV`` on scores (``None`` for ``none``: softmax of the scores as they are)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    if method == "none":
        return None
    scorer = ScoreClassifier()
    scorer.classes_ = classes
    every_row = np.arange(len(y))  # one "fold" holding every row: the frozen scorer has nothing to cross-fit
    return CalibratedClassifierCV(FrozenEstimator(scorer), method=method, cv=[(every_row, every_row)]).fit(Z, y)


def _proba(calibrator, Z: np.ndarray) -> np.ndarray:
    return scores_to_proba(Z) if calibrator is None else calibrator.predict_proba(Z)


def choose_method(Z: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Cross-validated Brier score of every method on the validation scores (lower is better).

    With too few rows of some class to split, only ``none`` (nothing fitted) is scored.
    """
    from sklearn.model_selection import StratifiedKFold

    from hpm_ray.metrics import brier_score

    y = np.asarray(y).astype(int)
    classes = np.arange(n_classes)
    k = min(folds, int(np.bincount(y, minlength=n_classes).min()))
    if k < 2:
        return {"none": brier_score(y, scores_to_proba(Z))}
    oof = {m: np.zeros((len(y), n_classes)) for m in METHODS}
    for fit_rows, score_rows in StratifiedKFold(k, shuffle=True, random_state=seed).split(Z, y):
        for m in METHODS:
            oof[m][score_rows] = _proba(_fit_calibrator(m, Z[fit_rows], y[fit_rows], classes), Z[score_rows])
    return {m: brier_score(y, p) for m, p in oof.items()}


class CalibratedStudent(ClassifierMixin, BaseEstimator):
    """A fitted student with its temperature undone and a calibrator fitted on validation rows.

    ``fit(X_val, y_val)`` never refits the student; it chooses and fits the calibrator (see the module
    docstring). ``method_`` names the calibrator chosen, ``cv_brier_`` holds every method's score.

    Examples
    --------
    >>> served = CalibratedStudent(student, temperature=3.0).fit(X_val, y_val)  # doctest: +SKIP
    >>> served.predict_proba(X_test).mean(axis=0)  # close to the class shares of the validation rows  # doctest: +SKIP
    """

    def __init__(self, student=None, temperature: float = 1.0):
        self.student = student
        self.temperature = temperature

    def _scores(self, X) -> np.ndarray:
        return unsoftened_scores(self.student.predict_proba(X), self.temperature)

    def fit(self, X, y):
        y = np.asarray(y).astype(int)
        self.classes_ = np.asarray(self.student.classes_)
        Z = self._scores(X)
        self.cv_brier_ = choose_method(Z, y, len(self.classes_))
        self.method_ = min(self.cv_brier_, key=self.cv_brier_.get)
        self.calibrator_ = _fit_calibrator(self.method_, Z, y, self.classes_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        return np.clip(_proba(self.calibrator_, self._scores(X)), 0.0, 1.0)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def size(self) -> int:
        return self.student.size()
