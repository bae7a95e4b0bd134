"""Quantile learners by name: the protocol the HPO trains through, and the registry the spec's ``learner`` reads.

A learner owns its declarative search space (rendered for Tune or Optuna by :mod:`~hpm_ray.hpo.space`), the
library defaults of those parameters (the untuned baseline), and how to grow one model per quantile a chunk of
boosting rounds at a time (ASHA's resource). The trainable, the refit and the registered pyfunc only use this
protocol, so a new learner is a class and one :func:`register_learner` call; ``hpo/runner.py`` does not change.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hpm_ray.errors import SpecError
from hpm_ray.hpo.baselines import BASELINES
from hpm_ray.hpo.lgbm import LightGBMLearner
from hpm_ray.hpo.space import Param
from hpm_ray.hpo.xgb import XGBoostLearner


class QuantileModel(Protocol):
    """One model per quantile of one training set, grown in lockstep.

    It must pickle without its training data: it travels back from Ray tasks and into the registered pyfunc.
    """

    def grow(self, rounds: int) -> None:
        """Add up to ``rounds`` boosting rounds per quantile (a model that cannot improve may stop early)."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated, possibly crossing) quantile forecasts, one column per quantile in training order."""


class QuantileLearner(Protocol):
    """What ``hpm-ray hpo`` needs from a gradient-boosting library.

    Examples
    --------
    >>> from hpm_ray.hpo.learners import get_learner
    >>> lgbm = get_learner("lightgbm")
    >>> sorted(lgbm.defaults) == sorted(p.name for p in lgbm.space)
    True
    """

    name: str  # the spec's ``learner``
    short: str  # names the untuned baseline: ``default_<short>``
    title: str  # the library, as reports print it
    space: tuple[Param, ...]  # the searched parameters, declared once
    defaults: dict  # the library's own defaults of the searched parameters: the untuned baseline

    def start(self, config: dict, X: np.ndarray, y: np.ndarray, quantiles, seed: int) -> QuantileModel:
        """Untrained models for ``quantiles`` on ``(X, y)``: shared preprocessing (binning) done, zero rounds."""


LEARNERS: dict[str, QuantileLearner] = {}


def register_learner(learner: QuantileLearner) -> QuantileLearner:
    """Make ``learner`` available by its ``name`` in specs and the CLI; its defaults must cover its space."""
    names = {p.name for p in learner.space}
    if not (learner.name and learner.short and learner.title) or not names or set(learner.defaults) != names:
        raise SpecError(
            f"learner {learner.name!r}: needs a name, a short name, a title, a search space and a default for each "
            "parameter"
        )
    if learner.name in LEARNERS and LEARNERS[learner.name] is not learner:
        raise SpecError(f"a learner named {learner.name!r} is registered already")
    if learner.short in BASELINES:  # the tuned family and default_<short> must not clash with a baseline's name
        raise SpecError(f"learner short name {learner.short!r} is a baseline's name")
    LEARNERS[learner.name] = learner
    return learner


def get_learner(name: str) -> QuantileLearner:
    if name not in LEARNERS:
        raise SpecError(f"unknown learner {name!r}; known: {', '.join(sorted(LEARNERS))}")
    return LEARNERS[name]


for _learner in (LightGBMLearner(), XGBoostLearner()):
    register_learner(_learner)
