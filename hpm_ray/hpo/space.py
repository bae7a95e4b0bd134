"""The LightGBM search space, defined once and rendered for Ray Tune (via OptunaSearch) or plain Optuna."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False


SPACE: tuple[Param, ...] = (
    Param("learning_rate", 0.01, 0.2, log=True),
    Param("num_leaves", 4, 64, log=True, integer=True),
    Param("max_depth", 2, 10, integer=True),
    Param("min_child_samples", 20, 400, log=True, integer=True),
    Param("feature_fraction", 0.4, 1.0),
    Param("bagging_fraction", 0.5, 1.0),
    Param("lambda_l1", 1e-8, 10.0, log=True),
    Param("lambda_l2", 1e-8, 10.0, log=True),
)


def tune_space() -> dict:
    """Ray Tune domains (OptunaSearch converts them to the same Optuna distributions as :func:`suggest`)."""
    from ray import tune

    out = {}
    for p in SPACE:
        if p.integer:
            out[p.name] = (
                tune.lograndint(int(p.low), int(p.high) + 1) if p.log else tune.randint(int(p.low), int(p.high) + 1)
            )
        else:
            out[p.name] = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
    return out


def suggest(trial) -> dict:
    """The same space drawn by a plain ``optuna.Trial`` (the sequential baseline of ``bench/hpo.py``)."""
    return {
        p.name: trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        if p.integer
        else trial.suggest_float(p.name, p.low, p.high, log=p.log)
        for p in SPACE
    }


def lgb_params(config: dict, quantile: float, seed: int) -> dict:
    """Full LightGBM parameters of one quantile booster: the searched ones plus fixed single-thread settings."""
    params = {k: config[k] for k in (p.name for p in SPACE) if k in config}
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
