"""Multi-teacher fusion, fitted on validation rows only (pure NumPy/SciPy).

Two ways: global weights on the simplex that minimise validation log loss, and per-row attention whose
logits are each teacher's confidence plus its agreement with the others, scaled by a sharpness ``beta``
chosen on validation. Both are always reported next to the best single teacher.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from hpm_ray import metrics as M


def combine(probas: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted average of (n, k) probability matrices with global (t,) or per-row (n, t) weights."""
    P = np.stack(probas, axis=1)  # (n, t, k)
    w = np.asarray(weights, dtype=float)
    w = np.broadcast_to(w, P.shape[:2]) if w.ndim == 1 else w
    return np.einsum("nt,ntk->nk", w, P)


def fit_weights(probas: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Simplex weights minimising log loss of the mixture (softmax parametrisation, L-BFGS)."""
    t = len(probas)
    if t == 1:
        return np.ones(1)
    # The mixture's probability of the true class is linear in the weights: the log loss of
    # combine(probas, w) (metrics.log_loss) from an (n, t) matrix, without re-validating labels at every step.
    y = np.asarray(y).astype(int)
    true_p = np.stack([np.asarray(p, dtype=float)[np.arange(len(y)), y] for p in probas], axis=1)
    eps = np.finfo(float).eps

    def loss(z):
        w = np.exp(z - z.max())
        return float(-np.mean(np.log(np.clip(true_p @ (w / w.sum()), eps, 1.0))))

    res = minimize(loss, np.zeros(t), method="L-BFGS-B")
    w = np.exp(res.x - res.x.max())
    return w / w.sum()


def attention_weights(probas: list[np.ndarray], beta: float) -> np.ndarray:
    """Per-row weights: softmax over teachers of beta * (confidence + agreement with the other teachers)."""
    P = np.stack(probas, axis=1)
    t = P.shape[1]
    conf = P.max(axis=2)
    if t > 1:
        tv = 0.5 * np.abs(P[:, :, None, :] - P[:, None, :, :]).sum(axis=3)  # (n, t, t) total variation
        agree = 1.0 - tv.sum(axis=2) / (t - 1)
    else:
        agree = np.ones_like(conf)
    z = beta * (conf + agree)
    z -= z.max(axis=1, keepdims=True)
    w = np.exp(z)
    return w / w.sum(axis=1, keepdims=True)


def fit_attention(probas: list[np.ndarray], y: np.ndarray, betas=(0.0, 1.0, 2.0, 5.0, 10.0, 20.0)) -> float:
    """The sharpness with the lowest validation log loss (beta = 0 is the plain average)."""
    losses = [M.log_loss(y, combine(probas, attention_weights(probas, b))) for b in betas]
    return float(betas[int(np.argmin(losses))])
