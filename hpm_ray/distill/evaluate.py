"""Scores of one probability matrix: the test metrics of the report and the validation selection score."""

from __future__ import annotations

import numpy as np

from hpm_ray import metrics as M

# Selection metrics of distillation, from the one scorer registry (``f1`` is macro F1 there, as in the gates).
SELECTION_METRICS = ("ks", "auc", "accuracy", "f1", "log_loss")
HIGHER_IS_BETTER = {m: M.SCORERS[m].greater_is_better for m in SELECTION_METRICS}


def resolve_metric(name: str, n_classes: int) -> str:
    """``auto`` means validation KS for binary tasks (credit scoring's habit) and log loss otherwise."""
    if name == "auto":
        return "ks" if n_classes == 2 else "log_loss"
    if name == "ks" and n_classes != 2:
        from hpm_ray.errors import SpecError

        raise SpecError("selection_metric 'ks' needs a binary target")
    return name


def score(metric: str, y: np.ndarray, proba: np.ndarray) -> float:
    return M.get_scorer(metric)(y, proba)


def better(metric: str, a: float, b: float) -> bool:
    """Is score ``a`` strictly better than ``b``?"""
    return M.get_scorer(metric).better(a, b)


def gain(metric: str, new: float, old: float) -> float:
    """Improvement of ``new`` over ``old`` with the sign fixed so that positive means better."""
    return M.get_scorer(metric).gain(new, old)


def gap_closed(student: float, twin: float, teacher: float) -> float:
    """(student - twin) / (teacher - twin): 1 = the student reaches the teacher; NaN when the twin is not behind."""
    gap = teacher - twin
    return (student - twin) / gap if gap > 0 else float("nan")


def test_metrics(y: np.ndarray, proba: np.ndarray, teacher: np.ndarray | None = None) -> dict[str, float]:
    binary = proba.shape[1] == 2
    out = {
        name: M.SCORERS[name](y, proba)
        for name in ("accuracy", "f1", "auc", "log_loss", "brier", "ece") + (("ks",) if binary else ())
    }
    if not binary:
        out["ks"] = float("nan")
    if teacher is not None:
        out["fidelity"] = M.agreement(teacher, proba)
        out["kl_to_teacher"] = M.kl_divergence(teacher, proba)
    return out
