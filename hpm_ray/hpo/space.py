"""Declarative search spaces: a learner lists its parameters once, rendered for Ray Tune or plain Optuna."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False


def tune_space(space: tuple[Param, ...]) -> dict:
    """Ray Tune domains (OptunaSearch converts them to the same Optuna distributions as :func:`suggest`)."""
    from ray import tune

    out = {}
    for p in space:
        if p.integer:
            out[p.name] = (
                tune.lograndint(int(p.low), int(p.high) + 1) if p.log else tune.randint(int(p.low), int(p.high) + 1)
            )
        else:
            out[p.name] = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
    return out


def suggest(trial, space: tuple[Param, ...]) -> dict:
    """The same space drawn by a plain ``optuna.Trial`` (the sequential baseline of ``bench/hpo.py``)."""
    return {
        p.name: trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        if p.integer
        else trial.suggest_float(p.name, p.low, p.high, log=p.log)
        for p in space
    }
