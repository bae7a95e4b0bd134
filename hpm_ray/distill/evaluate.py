"""Scores of one probability matrix: the test metrics of the report and the validation selection score."""

from __future__ import annotations

import numpy as np

from hpm_ray import metrics as M

HIGHER_IS_BETTER = {"ks": True, "auc": True, "accuracy": True, "f1": True, "log_loss": False}


def resolve_metric(name: str, n_classes: int) -> str:
    """``auto`` means validation KS for binary tasks (credit scoring's habit) and log loss otherwise."""
    if name == "auto":
        return "ks" if n_classes == 2 else "log_loss"
    if name == "ks" and n_classes != 2:
        from hpm_ray.errors import SpecError

        raise SpecError("selection_metric 'ks' needs a binary target")
    return name


def score(metric: str, y: np.ndarray, proba: np.ndarray) -> float:
    if metric == "ks":
        return M.ks_statistic(y, proba[:, 1])
    return {"auc": M.roc_auc, "accuracy": M.accuracy, "f1": M.f1_score, "log_loss": M.log_loss}[metric](y, proba)


def better(metric: str, a: float, b: float) -> bool:
    """Is score ``a`` strictly better than ``b``?"""
    return a > b if HIGHER_IS_BETTER[metric] else a < b


def gain(metric: str, new: float, old: float) -> float:
    """Improvement of ``new`` over ``old`` with the sign fixed so that positive means better."""
    return new - old if HIGHER_IS_BETTER[metric] else old - new


def test_metrics(y: np.ndarray, proba: np.ndarray, teacher: np.ndarray | None = None) -> dict[str, float]:
    out = {"accuracy": M.accuracy(y, proba), "f1": M.f1_score(y, proba), "auc": M.roc_auc(y, proba),
           "log_loss": M.log_loss(y, proba), "brier": M.brier_score(y, proba),
           "ece": M.expected_calibration_error(y, proba)}
    out["ks"] = M.ks_statistic(y, proba[:, 1]) if proba.shape[1] == 2 else float("nan")
    if teacher is not None:
        out["fidelity"] = M.agreement(teacher, proba)
        out["kl_to_teacher"] = M.kl_divergence(teacher, proba)
    return out
