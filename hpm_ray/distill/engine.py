"""Runs distillation configs as Ray tasks that all read ONE object-store copy of the data and teacher.

The driver calls ``ray.put`` once per run (:func:`put_payload`); each task receives the ObjectRef wrapped
in a list, so Ray hands the task the reference rather than resolving a copy into its arguments, and
``ray.get`` inside the task maps the NumPy arrays zero-copy (read-only) from shared memory.
A config that raises comes back as a ``failed`` record; the others carry on.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from hpm_ray.distill.evaluate import HIGHER_IS_BETTER, better, score
from hpm_ray.distill.soft_targets import soft_targets, soften
from hpm_ray.distill.students import STUDENTS, SoftStudent

# A task whose node dies is re-run elsewhere (Ray retries system failures only; a config that raises is not
# retried), and its ObjectRef resolves once, so every config is reported exactly once.
TASK_RETRIES = 3
# Independent CPU-bound fits: spread them over the nodes (Ray's default packs onto the driver's node first, and
# on a cluster that left the workers idle while the head queued). No effect on one machine.
TASK_OPTIONS = dict(num_cpus=1, max_retries=TASK_RETRIES, scheduling_strategy="SPREAD")


@dataclass
class ConfigTask:
    """One (student, T, alpha) config. ``fixed_params`` set: one fit with them; else an Optuna study."""

    key: str
    student: str
    temperature: float
    alpha: float
    n_trials: int = 1
    row_fraction: float = 1.0
    fixed_params: dict[str, Any] | None = None
    warm_params: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "ks"
    seed: int = 0
    stage: str = "full"
    teacher_ref: Any = None  # a list holding an ObjectRef of (train, val) probabilities replacing the teacher
    student_cls: type[SoftStudent] | None = None  # resolved on the driver so plug-in types reach workers


def put_payload(X_train, y_train, X_val, y_val, teacher_train, teacher_val, X_aug=None, teacher_aug=None):
    """Put the shared arrays in the object store once; returns the ObjectRef."""
    import ray

    return ray.put({"X_train": X_train, "y_train": np.asarray(y_train), "X_val": X_val, "y_val": np.asarray(y_val),
                    "teacher_train": np.asarray(teacher_train, dtype=float),
                    "teacher_val": np.asarray(teacher_val, dtype=float),
                    "X_aug": X_aug, "teacher_aug": None if teacher_aug is None else np.asarray(teacher_aug, dtype=float)})


def _subsample(n: int, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Stratified row subset for cheap screening fits (every class keeps its share)."""
    if fraction >= 1.0:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    parts = [rng.choice(np.flatnonzero(y == c), max(2, int(round(fraction * np.sum(y == c)))), replace=False)
             for c in np.unique(y)]
    return np.sort(np.concatenate(parts))


def _training_set(payload: dict, task: ConfigTask, teacher_train: np.ndarray):
    import pandas as pd

    y = payload["y_train"]
    rows = _subsample(len(y), y, task.row_fraction, task.seed)
    X = payload["X_train"].iloc[rows]
    q = soft_targets(teacher_train[rows], y[rows], task.temperature, task.alpha)
    if payload["X_aug"] is not None and task.alpha > 0:
        # synthetic rows have no label: their target is the softened teacher alone
        X = pd.concat([X, payload["X_aug"]], ignore_index=True)
        q = np.vstack([q, soften(payload["teacher_aug"], task.temperature)])
        y = np.concatenate([y[rows], payload["teacher_aug"].argmax(axis=1)])
        return X, y, q
    return X, y[rows], q


def run_config(payload_box: list, task: ConfigTask) -> dict:
    """Body of the Ray task (plain function so it can be unit-tested): fit, score on validation, keep the best."""
    import optuna
    import ray

    t0 = time.perf_counter()
    payload = ray.get(payload_box[0])
    teacher_train, teacher_val = payload["teacher_train"], payload["teacher_val"]
    if task.teacher_ref is not None:
        teacher_train, teacher_val = ray.get(task.teacher_ref[0])
    zero_copy = isinstance(payload_box[0], ray.ObjectRef) and not payload["teacher_train"].flags.writeable
    X, y, q = _training_set(payload, task, teacher_train)
    cls = task.student_cls or STUDENTS[task.student]
    history: list[float] = []
    tried: list[tuple[float, dict]] = []
    best: dict[str, Any] = {"score": None}

    def fit_and_score(params: dict[str, Any]) -> float:
        model = cls(**params, random_state=task.seed).fit(X, y, soft_targets=q)
        s = score(task.metric, payload["y_val"], model.predict_proba(payload["X_val"]))
        history.append(s)
        tried.append((s, dict(params)))
        if best["score"] is None or better(task.metric, s, best["score"]):
            best.update(score=s, params=dict(params), model=model)
        return s

    if task.fixed_params is not None:
        fit_and_score(task.fixed_params)
    else:
        direction = "maximize" if HIGHER_IS_BETTER[task.metric] else "minimize"
        study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=task.seed))
        # stored parameters fill at most half the budget: the rest keeps exploring
        for params in task.warm_params[: max(1, task.n_trials // 2)]:
            study.enqueue_trial(params, skip_if_exists=True)
        study.optimize(lambda trial: fit_and_score(cls.suggest(trial)), n_trials=task.n_trials)
    return {"key": task.key, "status": "ok", "node_id": ray.get_runtime_context().get_node_id(),
            "val_score": best["score"], "params": best["params"],
            "model": best["model"], "history": history,
            "top": sorted(tried, key=lambda sp: -sp[0] if HIGHER_IS_BETTER[task.metric] else sp[0])[:3], "n_fits": len(history),
            "fit_seconds": time.perf_counter() - t0, "payload_zero_copy": zero_copy}


def run_tasks(payload_ref, tasks: list[ConfigTask], progress: Callable[[str], None] | None = None,
              label: str = "configs") -> list[dict]:
    """Submit every task (Ray schedules them on free CPUs); collect results as they finish."""
    import ray

    remote = ray.remote(**TASK_OPTIONS)(run_config)
    by_ref = {}
    for task in tasks:
        if task.student_cls is None and task.student in STUDENTS:
            task.student_cls = STUDENTS[task.student]
        by_ref[remote.remote([payload_ref], task)] = task
    pending, done = list(by_ref), []
    t0 = time.perf_counter()
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        task = by_ref[ready[0]]
        try:
            rec = ray.get(ready[0])
        except Exception as exc:  # the config failed inside its task: record it, keep the run going
            cause = getattr(exc, "cause", None) or exc
            rec = {"key": task.key, "status": "failed", "error": f"{type(cause).__name__}: {cause}".splitlines()[0],
                   "n_fits": 0, "history": [], "val_score": None, "params": task.fixed_params or {},
                   "traceback": traceback.format_exception_only(type(exc), exc)[-1].strip()}
        rec["task"] = task
        done.append(rec)
        if progress:
            n_failed = sum(r["status"] == "failed" for r in done)
            progress(f"{label}: {len(done)}/{len(tasks)} done"
                     + (f", {n_failed} failed" if n_failed else "") + f" ({time.perf_counter() - t0:.0f}s)")
    return done
