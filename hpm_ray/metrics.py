"""Metrics: one scorer registry for classifier probabilities, plus the few scores written here by hand.

The registry (:data:`SCORERS`, :func:`get_scorer`) maps a name to its function and direction, all on
scikit-learn or SciPy, and is the one definition of "auc", "f1", "ks", ... that distillation selection, gates,
MLflow logging and drift read. Pinball loss, PSI, ECE, coverage and the like stay hand-written (pure NumPy,
tested against hand-computed values, and against scikit-learn's ``mean_pinball_loss`` where it has one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# scikit-learn and SciPy are imported where a scorer needs them: the A/B state actor and the router replicas import
# this module for the per-row losses only, and a cold start of theirs should not pay ~2 s for the rest.

_EPS = 1e-12


# --- quantile forecasts -------------------------------------------------------------------------------


def pinball_loss(y: np.ndarray, q_pred: np.ndarray, quantile: float) -> float:
    """Mean pinball (quantile) loss: max(tau * (y - q), (tau - 1) * (y - q))."""
    diff = np.asarray(y, dtype=float) - np.asarray(q_pred, dtype=float)
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1.0) * diff)))


def pinball_rows(y: np.ndarray, q_preds: np.ndarray, quantiles: list[float] | np.ndarray) -> np.ndarray:
    """Per-row pinball loss averaged over quantiles (a proper score per forecast); ``q_preds`` is (n, k)."""
    y = np.asarray(y, dtype=float)
    q_preds = np.asarray(q_preds, dtype=float).reshape(len(y), -1)
    diff = y[:, None] - q_preds
    tau = np.asarray(quantiles, dtype=float)[None, :]
    return np.mean(np.maximum(tau * diff, (tau - 1.0) * diff), axis=1)


def mean_pinball(y: np.ndarray, q_preds: np.ndarray, quantiles: list[float] | np.ndarray) -> float:
    """Pinball loss averaged over quantiles; ``q_preds`` has one column per quantile."""
    return float(np.mean(pinball_rows(y, q_preds, quantiles)))


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


def group_coverage_se(
    y: np.ndarray, lower: np.ndarray, upper: np.ndarray, groups: np.ndarray, n_groups: int, lag: int
) -> list:
    """Standard error of each group's coverage with a Bartlett (Newey-West) HAC variance over the time axis.

    Misses of h-step intervals come in runs (the targets of neighbouring rows overlap by h - 1 bars), so a
    binomial SE overstates the information in a coverage; ``lag = h - 1`` is the least that accounts for the
    overlap. Group k's coverage ``c_k = sum(m_t x_t) / n_k`` (``m_t``: row t in group k, ``x_t``: covered) has
    variance ``LRV(d) / n_k^2`` with ``d_t = m_t (x_t - c_k)``, its long-run variance estimated over all rows in
    time order. None for a group without rows.
    """
    y, g = np.asarray(y, dtype=float), np.asarray(groups)
    inside = ((y >= np.asarray(lower, dtype=float)) & (y <= np.asarray(upper, dtype=float))).astype(float)
    out = []
    for k in range(n_groups):
        m = g == k
        if not m.any():
            out.append(None)
            continue
        d = np.where(m, inside - inside[m].mean(), 0.0)
        v = float(d @ d)
        for j in range(1, min(lag, len(d) - 1) + 1):
            v += 2.0 * (1.0 - j / (lag + 1)) * float(d[j:] @ d[:-j])
        out.append(math.sqrt(max(v, 0.0)) / int(m.sum()))
    return out


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

    The credit-scoring KS: max over thresholds of |F_pos(t) - F_neg(t)| (``scipy.stats.ks_2samp``'s statistic).
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(score, dtype=float)
    if not (y == 1).any() or not (y == 0).any():
        raise ValueError("KS needs both classes in y_true")
    from scipy import stats

    return float(stats.ks_2samp(s[y == 1], s[y == 0], method="asymp").statistic)  # (no exact p-value: faster)


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
    Missing values (NaN) have a bin of their own: dropping them would hide a feature that went half missing.
    """
    e, a = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    e_nan, a_nan = np.isnan(e), np.isnan(a)
    e_counts, a_counts = _quantile_bin_counts(e[~e_nan], a[~a_nan], n_bins)
    return psi_counts(np.append(e_counts, e_nan.sum()), np.append(a_counts, a_nan.sum()))


def _quantile_bin_counts(e: np.ndarray, a: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of ``e`` and ``a`` in bins cut at ``e``'s quantiles (tied quantiles merge bins)."""
    if len(e) == 0:  # nothing to cut at: one bin for "present"
        return np.array([0]), np.array([len(a)])
    edges = np.unique(np.quantile(e, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:  # constant reference: "same value" vs "anything else"
        return np.array([len(e), 0]), np.array([np.sum(a == e[0]), np.sum(a != e[0])])
    inner = edges[1:-1]
    e_counts = np.bincount(np.searchsorted(inner, e, side="right"), minlength=len(inner) + 1)
    a_counts = np.bincount(np.searchsorted(inner, a, side="right"), minlength=len(inner) + 1)
    return e_counts, a_counts


def psi_counts(expected_counts: np.ndarray, actual_counts: np.ndarray) -> float:
    """PSI from aligned bin counts (a categorical feature passes its category counts)."""
    e = np.asarray(expected_counts, dtype=float)
    a = np.asarray(actual_counts, dtype=float)
    floor = 1e-4
    pe = np.maximum(e / max(e.sum(), 1.0), floor)
    pa = np.maximum(a / max(a.sum(), 1.0), floor)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


# --- classifier scores (binary: ``proba`` is (n,) for class 1 or (n, 2); multiclass: (n, k)) -----------
# ``y_true`` holds class codes 0..k-1, the columns of ``proba``.


def _as_matrix(proba: np.ndarray) -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    p = np.column_stack([1 - p, p]) if p.ndim == 1 else p
    # float32 model outputs (XGBoost, LightGBM) sum to 1 only to ~1e-7: undo that rounding, and only that, so
    # scikit-learn still warns about rows that are not probabilities
    total = p.sum(axis=1, keepdims=True)
    return np.where(np.abs(total - 1.0) < 1e-6, p / total, p)


def _codes(y_true: np.ndarray) -> np.ndarray:
    return np.asarray(y_true).astype(int)


def log_loss_rows(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-row negative log-probability of the true class (probabilities clipped away from 0): the sequential
    rollout test scores each labelled prediction; their mean is :func:`log_loss` (parity-tested)."""
    p = np.clip(_as_matrix(proba), _EPS, 1.0)
    y = _codes(y_true)
    return -np.log(p[np.arange(len(y)), y])


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-probability of the true class (scikit-learn's ``log_loss`` over all k classes)."""
    from sklearn import metrics as skm

    p = _as_matrix(proba)
    return float(skm.log_loss(_codes(y_true), p, labels=np.arange(p.shape[1])))


def brier_rows(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-row squared distance to the one-hot label; binary uses the usual (p1 - y)^2 form (halved sum)."""
    p = _as_matrix(proba)
    y = _codes(y_true)
    sq = np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1)
    return sq / 2.0 if p.shape[1] == 2 else sq


def brier_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean squared distance to the one-hot label; binary uses the usual (p1 - y)^2 form (halved sum)."""
    from sklearn import metrics as skm

    p = _as_matrix(proba)
    return float(skm.brier_score_loss(_codes(y_true), p, labels=np.arange(p.shape[1]), scale_by_half="auto"))


def accuracy(y_true: np.ndarray, proba: np.ndarray) -> float:
    from sklearn import metrics as skm

    return float(skm.accuracy_score(_codes(y_true), _as_matrix(proba).argmax(axis=1)))


def f1_score(y_true: np.ndarray, proba: np.ndarray, average: str) -> float:
    """F1 of the arg-max class: ``average="macro"`` (each class counts equally) or ``"binary"`` (class 1)."""
    return _prf("f1_score", y_true, proba, average)


def precision(y_true: np.ndarray, proba: np.ndarray, average: str) -> float:
    return _prf("precision_score", y_true, proba, average)


def recall(y_true: np.ndarray, proba: np.ndarray, average: str) -> float:
    return _prf("recall_score", y_true, proba, average)


def per_class(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """``precision_<c>`` and ``recall_<c>`` of every class code c (0 where a class is never predicted/present)."""
    from sklearn import metrics as skm

    p = _as_matrix(proba)
    labels = np.arange(p.shape[1])
    prec, rec, _, _ = skm.precision_recall_fscore_support(
        _codes(y_true), p.argmax(axis=1), labels=labels, zero_division=0.0
    )
    return {
        **{f"precision_{c}": float(v) for c, v in zip(labels, prec)},
        **{f"recall_{c}": float(v) for c, v in zip(labels, rec)},
    }


def _prf(name: str, y_true, proba, average: str) -> float:
    from sklearn import metrics as skm

    fn = getattr(skm, name)
    p = _as_matrix(proba)
    kw = {"pos_label": 1} if average == "binary" else {"labels": np.arange(p.shape[1])}
    return float(fn(_codes(y_true), p.argmax(axis=1), average=average, zero_division=0.0, **kw))


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC (scikit-learn's ``roc_auc_score``); multiclass is macro one-vs-rest."""
    from sklearn import metrics as skm

    p = _as_matrix(proba)
    y = _codes(y_true)
    if p.shape[1] == 2:
        return float(skm.roc_auc_score(y, p[:, 1]))
    return float(skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(p.shape[1])))


# --- the registry ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scorer:
    """A named score of class probabilities: ``func(y_codes, proba)`` and which way is better."""

    name: str
    func: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool

    def __call__(self, y_true: np.ndarray, proba: np.ndarray) -> float:
        return self.func(y_true, proba)

    def better(self, a: float, b: float) -> bool:
        """Is score ``a`` strictly better than ``b``?"""
        return a > b if self.greater_is_better else a < b

    def gain(self, new: float, old: float) -> float:
        """Improvement of ``new`` over ``old``, positive when better."""
        return new - old if self.greater_is_better else old - new


def _ks(y_true: np.ndarray, proba: np.ndarray) -> float:
    p = _as_matrix(proba)
    if p.shape[1] != 2:
        raise ValueError("KS needs a binary target")
    return ks_statistic(y_true, p[:, 1])


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer("auc", roc_auc, True),
        Scorer("log_loss", log_loss, False),
        Scorer("brier", brier_score, False),
        Scorer("accuracy", accuracy, True),
        # "f1", "precision", "recall" are macro averages: the minority class counts as much as the majority one.
        Scorer("f1", lambda y, p: f1_score(y, p, average="macro"), True),
        Scorer("precision", lambda y, p: precision(y, p, average="macro"), True),
        Scorer("recall", lambda y, p: recall(y, p, average="macro"), True),
        Scorer("ks", _ks, True),
        Scorer("ece", lambda y, p: expected_calibration_error(y, p), False),
    )
}


def get_scorer(name: str) -> Scorer:
    """The registered scorer ``name``; a ValueError naming the known ones otherwise."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(SCORERS)}") from None
