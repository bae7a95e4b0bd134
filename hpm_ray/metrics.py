"""Pure metric functions (NumPy only): quantile forecasts, classifiers, and distribution shift.

No Ray, MLflow or pandas state here, so every function is tested directly against hand-computed values.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


# --- quantile forecasts -------------------------------------------------------------------------------

def pinball_loss(y: np.ndarray, q_pred: np.ndarray, quantile: float) -> float:
    """Mean pinball (quantile) loss: max(tau * (y - q), (tau - 1) * (y - q))."""
    diff = np.asarray(y, dtype=float) - np.asarray(q_pred, dtype=float)
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1.0) * diff)))


def mean_pinball(y: np.ndarray, q_preds: np.ndarray, quantiles: list[float] | np.ndarray) -> float:
    """Pinball loss averaged over quantiles; ``q_preds`` has one column per quantile."""
    q_preds = np.asarray(q_preds, dtype=float).reshape(len(y), -1)
    return float(np.mean([pinball_loss(y, q_preds[:, j], q) for j, q in enumerate(quantiles)]))


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of ``y`` inside the closed interval [lower, upper]."""
    y = np.asarray(y, dtype=float)
    return float(np.mean((y >= lower) & (y <= upper)))


def mean_width(lower: np.ndarray, upper: np.ndarray) -> float:
    return float(np.mean(np.asarray(upper, dtype=float) - np.asarray(lower, dtype=float)))


def crossing_rate(q_preds: np.ndarray) -> float:
    """Share of rows whose quantile predictions (columns in increasing quantile order) are not non-decreasing."""
    q = np.asarray(q_preds, dtype=float)
    if q.shape[1] < 2:
        return 0.0
    return float(np.mean(np.any(np.diff(q, axis=1) < 0, axis=1)))


def interval_score(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, alpha: float) -> float:
    """Mean interval score (Gneiting & Raftery 2007): width + (2/alpha) x distance outside; proper for the
    central 1 - alpha interval, so it rewards coverage and narrowness together (lower is better)."""
    y, lo, hi = (np.asarray(a, dtype=float) for a in (y, lower, upper))
    return float(np.mean(hi - lo + 2.0 / alpha * (np.maximum(lo - y, 0.0) + np.maximum(y - hi, 0.0))))


def tercile_cuts(values: np.ndarray) -> np.ndarray:
    """The 1/3 and 2/3 quantiles of the finite ``values`` (cut on a training block, applied to later ones)."""
    v = np.asarray(values, dtype=float)
    return np.quantile(v[np.isfinite(v)], [1 / 3, 2 / 3])


def group_coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, groups: np.ndarray, n_groups: int) -> list:
    """Coverage within each group 0..n_groups-1 (None for a group without rows)."""
    y, g = np.asarray(y, dtype=float), np.asarray(groups)
    inside = (y >= np.asarray(lower, dtype=float)) & (y <= np.asarray(upper, dtype=float))
    return [float(np.mean(inside[g == k])) if np.any(g == k) else None for k in range(n_groups)]


def longest_miss_run(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> int:
    """The most consecutive rows whose ``y`` falls outside its interval."""
    y = np.asarray(y, dtype=float)
    miss = (y < np.asarray(lower, dtype=float)) | (y > np.asarray(upper, dtype=float))
    best = run = 0
    for m in miss:
        run = run + 1 if m else 0
        best = max(best, run)
    return best


def rolling_coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, window: int) -> np.ndarray:
    """Coverage over each trailing ``window`` rows, one value per row from row ``window - 1`` on."""
    y = np.asarray(y, dtype=float)
    inside = ((y >= np.asarray(lower, dtype=float)) & (y <= np.asarray(upper, dtype=float))).astype(float)
    if window < 1 or window > len(inside):
        return np.empty(0)
    c = np.concatenate([[0.0], np.cumsum(inside)])
    return (c[window:] - c[:-window]) / window


# --- classifiers ------------------------------------------------------------------------------------

def ks_statistic(y_true: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the score distributions of positives and negatives.

    The credit-scoring KS: max over thresholds of |F_pos(t) - F_neg(t)|, ties handled by evaluating the
    empirical CDFs only at distinct score values.
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(score, dtype=float)
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("KS needs both classes in y_true")
    grid = np.unique(s)
    cdf_pos = np.searchsorted(pos, grid, side="right") / len(pos)
    cdf_neg = np.searchsorted(neg, grid, side="right") / len(neg)
    return float(np.max(np.abs(cdf_pos - cdf_neg)))


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the predicted class: bin by confidence, weight |accuracy - confidence| by bin size.

    ``proba`` is (n,) for the positive class of a binary task, or (n, k) class probabilities.
    """
    p = np.asarray(proba, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1 - p, p])
    y = np.asarray(y_true).astype(int)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Mean row-wise KL(p || q) of class-probability matrices (teacher p, student q)."""
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1.0)
    q = np.clip(np.asarray(q, dtype=float), _EPS, 1.0)
    if p.ndim == 1:
        p, q = np.column_stack([1 - p, p]), np.column_stack([1 - q, q])
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def agreement(p: np.ndarray, q: np.ndarray) -> float:
    """Share of rows where two probability matrices predict the same class (fidelity)."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.ndim == 1:
        return float(np.mean((p >= 0.5) == (q >= 0.5)))
    return float(np.mean(p.argmax(axis=1) == q.argmax(axis=1)))


# --- distribution shift ---------------------------------------------------------------------------------

def psi(expected: np.ndarray, actual: np.ndarray, n_bins: int = 10) -> float:
    """Population stability index of a numeric feature, bins from the reference (``expected``) quantiles.

    PSI = sum((a - e) * ln(a / e)) over bins; empty bins get a small floor so one empty bin is not infinite.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    edges = np.unique(np.quantile(e, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:  # constant reference: "same value" vs "anything else"
        return psi_counts(np.array([len(e), 0]), np.array([np.sum(a == e[0]), np.sum(a != e[0])]))
    inner = edges[1:-1]
    e_counts = np.bincount(np.searchsorted(inner, e, side="right"), minlength=len(inner) + 1)
    a_counts = np.bincount(np.searchsorted(inner, a, side="right"), minlength=len(inner) + 1)
    return psi_counts(e_counts, a_counts)


def psi_counts(expected_counts: np.ndarray, actual_counts: np.ndarray) -> float:
    """PSI from aligned bin counts (a categorical feature passes its category counts)."""
    e = np.asarray(expected_counts, dtype=float)
    a = np.asarray(actual_counts, dtype=float)
    floor = 1e-4
    pe = np.maximum(e / max(e.sum(), 1.0), floor)
    pa = np.maximum(a / max(a.sum(), 1.0), floor)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


# --- classifier scores (binary: ``proba`` is (n,) for class 1 or (n, 2); multiclass: (n, k)) -----------

def _as_matrix(proba: np.ndarray) -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    return np.column_stack([1 - p, p]) if p.ndim == 1 else p


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-probability of the true class (probabilities clipped away from 0)."""
    p = np.clip(_as_matrix(proba), _EPS, 1.0)
    y = np.asarray(y_true).astype(int)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def brier_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean squared distance to the one-hot label; binary uses the usual (p1 - y)^2 form."""
    p = _as_matrix(proba)
    y = np.asarray(y_true).astype(int)
    onehot = np.eye(p.shape[1])[y]
    sq = np.sum((p - onehot) ** 2, axis=1)
    return float(np.mean(sq / 2.0 if p.shape[1] == 2 else sq))


def accuracy(y_true: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(_as_matrix(proba).argmax(axis=1) == np.asarray(y_true).astype(int)))


def f1_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """F1 of class 1 for binary tasks, macro-averaged F1 over classes otherwise."""
    p = _as_matrix(proba)
    y = np.asarray(y_true).astype(int)
    pred = p.argmax(axis=1)
    classes = [1] if p.shape[1] == 2 else range(p.shape[1])
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)
        scores.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC via the rank-sum (Mann-Whitney) form, ties averaged; multiclass is macro one-vs-rest."""
    p = _as_matrix(proba)
    y = np.asarray(y_true).astype(int)
    classes = [1] if p.shape[1] == 2 else range(p.shape[1])
    aucs = []
    for c in classes:
        pos = y == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            raise ValueError(f"ROC AUC needs both class {c} and other classes in y_true")
        s = p[:, c]
        order = np.argsort(s, kind="mergesort")
        ranks = np.empty(len(s), dtype=float)
        sorted_s = s[order]
        # average rank of each run of equal scores
        _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
        avg = start + (counts + 1) / 2.0
        ranks[order] = np.repeat(avg, counts)
        aucs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    return float(np.mean(aucs))
