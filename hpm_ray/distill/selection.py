"""Adaptive configuration selection: screen every (student, T, alpha) cheaply, promote the best few.

Successive halving with two rungs: a screening rung (one fit per config on a stratified share of the
training rows and, for boosted students, the same share of their boosting rounds; scored on validation) and
a full rung (an Optuna study with the whole training set) for at most ``max_configs`` configs. The ranking
uses real validation scores, never the test split.
"""

from __future__ import annotations

from itertools import product

from hpm_ray.distill.evaluate import HIGHER_IS_BETTER, better


def config_grid(
    students: list[str], temperatures: dict[str, list[float]], alphas: list[float]
) -> list[tuple[str, float, float]]:
    """Every (student, T, alpha) with the temperatures allowed for that student."""
    return [(s, t, a) for s in students for t, a in product(temperatures[s], alphas)]


def promote(records: list[dict], k: int, metric: str) -> list[dict]:
    """The ``k`` successful records with the best validation score (failed configs never advance)."""
    ok = [r for r in records if r["status"] == "ok"]
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    return sorted(ok, key=lambda r: sign * r["val_score"])[:k]


def trials_to_reach(history: list[float], target: float, metric: str, tol: float = 1e-9) -> int | None:
    """1-based index of the first trial whose score is at least as good as ``target`` (None: never)."""
    for i, s in enumerate(history, start=1):
        if not better(metric, target, s + (tol if HIGHER_IS_BETTER[metric] else -tol)):
            return i
    return None
