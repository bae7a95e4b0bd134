"""What one trial does: grow the learner's quantile models in lockstep and score them on purged walk-forward folds.

:func:`fit_steps` is plain Python (used by the Tune trainable and by the sequential Optuna baseline), so the
two searches of ``bench/hpo.py`` differ only in the orchestration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hpm_ray.hpo.learners import QuantileLearner
from hpm_ray.metrics import mean_pinball

METRIC = "val_pinball"


@dataclass(frozen=True)
class SearchData:
    """Everything a trial reads: features, target and fold indices of one horizon, the learner, fixed settings.

    Put into the object store once per experiment; trials get zero-copy read-only views of the arrays.
    Models fit ``y / scale`` and predictions are multiplied back by ``scale`` (see ``HPOSpec.scale_by``). The
    learner object itself travels (not its name), so a learner registered only on the driver reaches the workers.
    """

    X: np.ndarray
    y: np.ndarray
    scale: np.ndarray
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]
    quantiles: tuple[float, ...]
    max_rounds: int
    report_every: int
    seed: int
    learner: QuantileLearner


def target_scale(values: np.ndarray, horizon: int, fill: float) -> np.ndarray:
    """Per-row target scale ``value * sqrt(horizon)``; undefined or non-positive values get ``fill``."""
    v = np.asarray(values, dtype=float)
    v = np.where(np.isfinite(v) & (v > 0), v, fill)
    return v * np.sqrt(horizon)


def fit_steps(config: dict, data: SearchData) -> Iterator[tuple[int, float]]:
    """Yield ``(rounds, mean validation pinball over quantiles and folds)`` every ``report_every`` rounds."""
    fold_models = [
        (data.learner.start(config, data.X[tr], data.y[tr] / data.scale[tr], data.quantiles, data.seed), va)
        for tr, va in data.folds
    ]
    for rounds in range(data.report_every, data.max_rounds + 1, data.report_every):
        scores = []
        for model, va in fold_models:
            model.grow(data.report_every)
            q = model.predict(data.X[va]) * data.scale[va, None]
            scores.append(mean_pinball(data.y[va], q, data.quantiles))
        yield rounds, float(np.mean(scores))


def tune_trainable(config: dict, data: SearchData) -> None:
    """Ray Tune function trainable: one report per ``report_every`` rounds (ASHA's time unit)."""
    import ray
    from ray import tune

    node = ray.get_runtime_context().get_node_id()  # which machine ran the trial (placement evidence)
    for rounds, score in fit_steps(config, data):
        # reported_at: Tune's own ``timestamp`` is whole seconds, too coarse to measure its per-trial overhead
        tune.report({METRIC: score, "rounds": rounds, "node_id": node, "reported_at": time.time()})
