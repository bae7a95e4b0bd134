"""The LightGBM quantile learner: one booster per quantile (``objective="quantile"``) on one binned dataset."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hpm_ray.hpo.space import Param


class LightGBMQuantiles:
    """The boosters of one training set; pickles without the dataset (LightGBM's Booster drops it)."""

    def __init__(self, boosters: list):
        self.boosters = boosters

    def grow(self, rounds: int) -> None:
        for b in self.boosters:
            for _ in range(rounds):
                if b.update():  # it cannot split any more: it simply stops growing
                    break

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([b.predict(X) for b in self.boosters])


# Protocol shape: QuantileLearner (hpm_ray.hpo.learners): name, short, title, space, defaults, start.
class LightGBMLearner:
    """Searched parameters of single-threaded LightGBM quantile boosters (Ray runs trials in parallel)."""

    name, short, title = "lightgbm", "lgbm", "LightGBM"
    space: ClassVar[tuple[Param, ...]] = (
        Param("learning_rate", 0.01, 0.2, log=True),
        Param("num_leaves", 4, 64, log=True, integer=True),
        Param("max_depth", 2, 10, integer=True),
        Param("min_child_samples", 20, 400, log=True, integer=True),
        Param("feature_fraction", 0.4, 1.0),
        Param("bagging_fraction", 0.5, 1.0),
        Param("lambda_l1", 1e-8, 10.0, log=True),
        Param("lambda_l2", 1e-8, 10.0, log=True),
    )
    defaults: ClassVar[dict] = dict(
        learning_rate=0.1,
        num_leaves=31,
        max_depth=-1,
        min_child_samples=20,
        feature_fraction=1.0,
        bagging_fraction=1.0,
        lambda_l1=0.0,
        lambda_l2=0.0,
    )

    def params(self, config: dict, quantile: float, seed: int) -> dict:
        """Full parameters of one quantile booster: the searched ones plus fixed single-thread settings."""
        params = {p.name: config[p.name] for p in self.space if p.name in config}
        params.update(
            objective="quantile",
            alpha=quantile,
            num_threads=1,
            verbose=-1,
            seed=seed,
            bagging_freq=1 if params.get("bagging_fraction", 1.0) < 1.0 else 0,
            deterministic=True,
        )
        return params

    def start(self, config: dict, X: np.ndarray, y: np.ndarray, quantiles, seed: int) -> LightGBMQuantiles:
        import lightgbm as lgb

        params = {"verbose": -1, "feature_pre_filter": False, "num_threads": 1}
        ds = lgb.Dataset(X, y, params=params, free_raw_data=False)
        ds.construct()  # binning, the expensive part, once for every quantile
        return LightGBMQuantiles([lgb.Booster(self.params(config, q, seed), ds) for q in quantiles])
