"""Soft targets, the one piece of math every student shares (pure NumPy, tested by hand).

target = alpha * softmax(log(p_teacher) / T) + (1 - alpha) * onehot(y). The teacher's log-probabilities
are its logits up to a per-row constant, which softmax ignores, so T = 1 gives back the teacher itself.
"""

from __future__ import annotations

import numpy as np

from hpm_ray.errors import DataError, SpecError

_EPS = 1e-12


def as_proba_matrix(proba: np.ndarray, n_classes: int | None = None, what: str = "teacher probabilities") -> np.ndarray:
    """(n,) positive-class or (n, k) probabilities -> checked (n, k) matrix whose rows sum to 1."""
    p = np.asarray(proba, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2:
        raise DataError(f"{what} must be a 1-D or 2-D array, got shape {p.shape}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise DataError(f"{what} have {p.shape[1]} columns but the target has {n_classes} classes")
    if not np.all(np.isfinite(p)):
        raise DataError(f"{what} contain {int(np.sum(~np.isfinite(p)))} non-finite value(s)")
    if np.any(p < -1e-9) or np.any(np.abs(p.sum(axis=1) - 1.0) > 1e-4):
        raise DataError(f"{what} are not probabilities (negative values or rows not summing to 1)")
    return np.clip(p, 0.0, 1.0)


def check_temperature(temperature: float) -> float:
    if not np.isfinite(temperature) or temperature <= 0:
        raise SpecError(f"temperature must be > 0, got {temperature}")
    return float(temperature)


def check_alpha(alpha: float) -> float:
    if not np.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise SpecError(f"alpha must be in [0, 1], got {alpha}")
    return float(alpha)


def soften(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T) row-wise: T > 1 flattens the distribution, T < 1 sharpens it."""
    t = check_temperature(temperature)
    z = np.log(np.clip(as_proba_matrix(proba), _EPS, 1.0)) / t
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def one_hot(y: np.ndarray, n_classes: int) -> np.ndarray:
    y = np.asarray(y).astype(int)
    return np.eye(n_classes)[y]


def soft_targets(teacher_proba: np.ndarray, y: np.ndarray, temperature: float, alpha: float) -> np.ndarray:
    """alpha * softened teacher + (1 - alpha) * one-hot label: an (n, k) matrix of training targets."""
    a = check_alpha(alpha)
    soft = soften(teacher_proba, temperature)
    if len(soft) != len(y):
        raise DataError(f"teacher probabilities have {len(soft)} rows but the target has {len(y)}")
    return a * soft + (1.0 - a) * one_hot(y, soft.shape[1])


def expand_rows(targets: np.ndarray, min_weight: float = 1e-9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted duplication: row i appears once per class c with label c and weight targets[i, c].

    Minimising the weighted log loss over the copies equals minimising cross-entropy to the soft target
    (the gradient of sum_c q_c * CE(e_c) is p - q), so any learner that takes ``sample_weight`` trains on
    the soft target exactly. Zero-weight copies are dropped: one-hot targets give back the original rows.
    Returns (row index, label, weight).
    """
    q = np.asarray(targets, dtype=float)
    n, k = q.shape
    rows = np.tile(np.arange(n), k)
    labels = np.repeat(np.arange(k), n)
    weights = q.T.ravel()
    keep = weights > min_weight
    return rows[keep], labels[keep], weights[keep]
