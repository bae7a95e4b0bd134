"""Shared optimisation memory: the best hyperparameters per (student, T, alpha, metric, dataset fingerprint).

An Optuna journal in the runs folder (``JournalStorage`` on a ``JournalFileBackend``): every write is one
appended, file-locked record, so runs that share the memory concurrently never overwrite each other. Each
config key is one Optuna study whose trials are the validation scores of the parameter sets tried there; a
parameter set scored several times keeps its best score. A later run on data with the same fingerprint (same
columns and dtypes, same classes, rows within a factor of ~1.4) enqueues the stored parameters as the first
trials of its studies: the config's own best first, then the best of the student's other configs. On a
fingerprint miss it uses the nearest stored fingerprint of the same schema (closest row count, at most
``MAX_ROW_STEPS`` powers of two away), so a run on similar data of another size still starts warm. Stored
scores are never reused: every enqueued parameter set is fitted and scored again on the new data.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from hpm_ray.distill.evaluate import HIGHER_IS_BETTER
from hpm_ray.runtime import runs_dir

_PARAMS = "params"  # user attribute of a memory trial: the parameter set, as JSON-safe values
MAX_ROW_STEPS = 2  # a fingerprint miss borrows from data at most 2 powers of two larger or smaller


def fingerprint(X: pd.DataFrame, n_classes: int) -> str:
    """``<schema hash>-r<rows rounded to a power of two>``: 'similar data', not 'identical data'.

    The schema hash covers column names, numeric-or-not and the class count; the row step stays readable so
    that :func:`nearest_fingerprint` can find stored data of a similar size."""
    schema = [(str(c), pd.api.types.is_numeric_dtype(X[c])) for c in X.columns]
    raw = json.dumps({"schema": schema, "k": n_classes})
    return f"{hashlib.sha256(raw.encode()).hexdigest()[:16]}-r{round(math.log2(max(len(X), 1)))}"


def nearest_fingerprint(fp: str, stored, max_steps: int = MAX_ROW_STEPS) -> str | None:
    """``fp`` if stored, else the stored fingerprint of the same schema with the closest row step (within
    ``max_steps``; a tie goes to the larger data), else None. Fingerprints without a row step never match."""
    stored = set(stored)
    if fp in stored:
        return fp
    schema, sep, step = fp.rpartition("-r")
    if not sep or not step.isdigit():
        return None
    candidates = []
    for other in stored:
        o_schema, _, o_step = other.rpartition("-r")
        if o_schema == schema and o_step.isdigit() and abs(int(o_step) - int(step)) <= max_steps:
            candidates.append((abs(int(o_step) - int(step)), -int(o_step), other))
    return min(candidates)[2] if candidates else None


def config_key(student: str, temperature: float, alpha: float, metric: str, fp: str) -> str:
    """The study name of one config in the journal (scores of different metrics are never mixed)."""
    return f"{student}|T={temperature:g}|alpha={alpha:g}|{metric}|{fp}"


class OptimizationMemory:
    """Best parameter sets per config key, in an Optuna journal file shared by concurrent runs.

    Examples
    --------
    >>> mem = OptimizationMemory(tmp / "memory.journal")  # doctest: +SKIP
    >>> mem.record("lgbm", fp, "ks", 2.0, 0.7, {"num_leaves": 15}, 0.41)  # doctest: +SKIP
    >>> mem.best_params("lgbm", fp, "ks", 2.0, 0.7)  # doctest: +SKIP
    [{'num_leaves': 15}]
    """

    def __init__(self, path: str | Path | None = None, keep: int = 3):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        self.path = Path(path) if path else runs_dir() / "distill_memory.journal"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.storage = JournalStorage(JournalFileBackend(str(self.path)))

    def _entries(self, key: str, metric: str) -> list[tuple[float, dict[str, Any]]]:
        """(best score, params) of every parameter set stored under ``key``, best first."""
        import optuna
        from optuna.trial import TrialState

        try:
            study = optuna.load_study(study_name=key, storage=self.storage)
        except KeyError:  # nothing stored for this config yet
            return []
        hib = HIGHER_IS_BETTER[metric]
        best: dict[str, tuple[float, dict[str, Any]]] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            params = t.user_attrs[_PARAMS]
            k = json.dumps(params, sort_keys=True)
            if k not in best or (t.value > best[k][0] if hib else t.value < best[k][0]):
                best[k] = (t.value, params)
        return sorted(best.values(), key=lambda e: -e[0] if hib else e[0])

    def best_params(
        self, student: str, fp: str, metric: str, temperature: float | None = None, alpha: float | None = None
    ) -> list[dict[str, Any]]:
        """Up to ``keep`` stored parameter sets: the (T, alpha) config's own, best first, then the best of the
        student's other configs on this fingerprint (all of them, best first, when no config is given).

        Without entries for ``fp``, the student's entries under :func:`nearest_fingerprint` are used."""
        import optuna

        prefix, tail = f"{student}|", f"|{metric}|"
        names = [n for n in optuna.get_all_study_names(self.storage) if n.startswith(prefix) and tail in n]
        fp = nearest_fingerprint(fp, (n.rpartition("|")[2] for n in names))
        if fp is None:
            return []
        own_key = None if temperature is None else config_key(student, temperature, alpha, metric, fp)
        own = [] if own_key is None else self._entries(own_key, metric)
        others = [
            e for name in names if name.endswith(tail + fp) and name != own_key for e in self._entries(name, metric)
        ]
        others.sort(key=lambda e: -e[0] if HIGHER_IS_BETTER[metric] else e[0])
        out: list[dict[str, Any]] = []
        for _, params in own + others:
            if params not in out:
                out.append(params)
        return out[: self.keep]

    def record(
        self, student: str, fp: str, metric: str, temperature: float, alpha: float, params: dict[str, Any], score: float
    ) -> None:
        """Append one scored parameter set to its config's study (created on first use); one locked write."""
        import optuna

        direction = "maximize" if HIGHER_IS_BETTER[metric] else "minimize"
        name = config_key(student, temperature, alpha, metric, fp)
        study = optuna.create_study(storage=self.storage, study_name=name, direction=direction, load_if_exists=True)
        study.add_trial(optuna.trial.create_trial(value=float(score), user_attrs={_PARAMS: params}))
