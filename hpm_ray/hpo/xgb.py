"""The XGBoost quantile learner: one booster for all quantiles (``reg:quantileerror``, ``quantile_alpha`` a list).

XGBoost grows one tree per quantile in every round, so the rounds budget means the same as LightGBM's.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hpm_ray.hpo.space import Param


class XGBoostQuantiles:
    """The booster and, while it trains, its ``QuantileDMatrix``; a pickled copy keeps the booster only."""

    def __init__(self, booster, train=None):
        self.booster, self.train = booster, train

    def grow(self, rounds: int) -> None:
        for _ in range(rounds):
            self.booster.update(self.train, self.booster.num_boosted_rounds())

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.booster.inplace_predict(X).reshape(len(X), -1)  # one quantile: a vector

    def __getstate__(self) -> dict:
        return {"booster": self.booster, "train": None}  # the training matrix is a native handle: not shipped


# Protocol shape: QuantileLearner (hpm_ray.hpo.learners): name, short, title, space, defaults, start.
class XGBoostLearner:
    """Searched parameters of single-threaded ``hist`` XGBoost quantile regression (Ray runs trials in parallel).

    The quantile loss has unit hessians, so ``min_child_weight`` is a minimum row count per leaf (searched over
    1-400 rows).
    """

    name, short, title = "xgboost", "xgb", "XGBoost"
    space: ClassVar[tuple[Param, ...]] = (
        Param("learning_rate", 0.01, 0.3, log=True),
        Param("max_depth", 2, 10, integer=True),
        Param("min_child_weight", 1.0, 400.0, log=True),
        Param("subsample", 0.5, 1.0),
        Param("colsample_bytree", 0.4, 1.0),
        Param("reg_alpha", 1e-8, 10.0, log=True),
        Param("reg_lambda", 1e-8, 10.0, log=True),
    )
    defaults: ClassVar[dict] = dict(
        learning_rate=0.3,
        max_depth=6,
        min_child_weight=1.0,
        subsample=1.0,
        colsample_bytree=1.0,
        reg_alpha=0.0,
        reg_lambda=1.0,
    )

    def params(self, config: dict, quantiles, seed: int) -> dict:
        """Full booster parameters: the searched ones plus the quantile objective and fixed single-thread settings."""
        params = {p.name: config[p.name] for p in self.space if p.name in config}
        params.update(
            objective="reg:quantileerror",
            quantile_alpha=list(quantiles),
            tree_method="hist",
            nthread=1,
            seed=seed,
            verbosity=0,
        )
        return params

    def start(self, config: dict, X: np.ndarray, y: np.ndarray, quantiles, seed: int) -> XGBoostQuantiles:
        import xgboost as xgb

        train = xgb.QuantileDMatrix(X, y, nthread=1)  # binning, once for every quantile
        return XGBoostQuantiles(xgb.Booster(self.params(config, quantiles, seed), [train]), train)
