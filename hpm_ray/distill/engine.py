"""Runs distillation configs as Ray tasks that all read ONE object-store copy of the data and teacher.

The driver calls ``ray.put`` once per run (:func:`put_payload`); each task receives the ObjectRef wrapped
in a list, so Ray hands the task the reference rather than resolving a copy into its arguments, and
``ray.get`` inside the task maps the NumPy arrays zero-copy (read-only) from shared memory.
Cheap single fits (screening) travel several to a Ray task, so dispatch does not outweigh the fit.
A config that raises comes back as a ``failed`` record; the others carry on.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpm_ray._compat import task_attempt_number
from hpm_ray.distill.calibration import CalibratedStudent
from hpm_ray.distill.catalog import STUDENTS
from hpm_ray.distill.evaluate import HIGHER_IS_BETTER, better, score
from hpm_ray.distill.soft_targets import soft_targets, soften
from hpm_ray.distill.students import SoftStudent

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
    budget: float = 1.0  # share of the full budget a fit gets: training rows and boosting rounds (rung < 1)
    fixed_params: dict[str, Any] | None = None
    warm_params: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "ks"
    seed: int = 0
    stage: str = "full"
    keep_model: bool = True  # False: the record carries validation probabilities only (screening, probes);
    # True: also the fitted student ("model") and the calibrated estimator that is served ("calibrated")
    student_cls: type[SoftStudent] | None = None  # resolved on the driver so plug-in types reach workers


def put_payload(X_train, y_train, X_val, y_val, teacher_train, teacher_val, X_aug=None, teacher_aug=None):
    """Put the shared arrays in the object store once; returns the ObjectRef."""
    import ray

    return ray.put(
        {
            "X_train": X_train,
            "y_train": np.asarray(y_train),
            "X_val": X_val,
            "y_val": np.asarray(y_val),
            "teacher_train": np.asarray(teacher_train, dtype=float),
            "teacher_val": np.asarray(teacher_val, dtype=float),
            "X_aug": X_aug,
            "teacher_aug": None if teacher_aug is None else np.asarray(teacher_aug, dtype=float),
        }
    )


def _subsample(n: int, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Stratified row subset for cheap screening fits (every class keeps its share)."""
    if fraction >= 1.0:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    parts = [
        rng.choice(np.flatnonzero(y == c), max(2, round(fraction * np.sum(y == c))), replace=False)
        for c in np.unique(y)
    ]
    return np.sort(np.concatenate(parts))


def _training_set(payload: dict, task: ConfigTask, teacher_train: np.ndarray):
    import pandas as pd

    y = payload["y_train"]
    rows = _subsample(len(y), y, task.budget, task.seed)
    X = payload["X_train"].iloc[rows]
    q = soft_targets(teacher_train[rows], y[rows], task.temperature, task.alpha)
    if payload["X_aug"] is not None and task.alpha > 0:
        # synthetic rows have no label: their target is the softened teacher alone
        X = pd.concat([X, payload["X_aug"]], ignore_index=True)
        q = np.vstack([q, soften(payload["teacher_aug"], task.temperature)])
        y = np.concatenate([y[rows], payload["teacher_aug"].argmax(axis=1)])
        return X, y, q
    return X, y[rows], q


def _budgeted(cls: type[SoftStudent], params: dict[str, Any], fraction: float) -> dict[str, Any]:
    """A low rung's fit also gets fewer boosting rounds (successive halving on rounds as well as rows).

    A boosted student's cost grows with its rounds far more than with its rows, so a screening fit on a
    share of the rows alone would cost nearly as much as a full one.
    """
    if fraction >= 1.0:
        return params
    n = {**cls().get_params(), **params}.get("n_estimators")
    if n is None:
        return params
    return {**params, "n_estimators": max(1, round(n * fraction))}


def study_seed(key: str, seed: int) -> int:
    """The sampler seed of one config's study: stable across processes (unlike ``hash()``), distinct per config.

    One seed for every study made them all draw the same parameter sets; the key makes each config search
    its own points, and the run's ``seed`` still reproduces the whole run.
    """
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def startup_trials(n_trials: int) -> int:
    """Random start-up trials before TPE models the study: a quarter of the budget, at least 2.

    Optuna's default of 10 exceeds every budget this package uses, which left TPE a random search.
    """
    return max(2, n_trials // 4)


def make_sampler(task: ConfigTask):
    """TPE (multivariate by default in Optuna 5) seeded from the config's key, learning within its budget."""
    import optuna

    return optuna.samplers.TPESampler(
        seed=study_seed(task.key, task.seed), n_startup_trials=startup_trials(task.n_trials)
    )


def fit_config(payload: dict, task: ConfigTask, teacher_train: np.ndarray) -> dict:
    """Fit one config (an Optuna study, or one fit with ``fixed_params``) on ``payload``; score on validation.

    ``teacher_train`` is the payload's teacher, or the previous stage's probabilities in the chain.

    Raises if the config fails; the callers turn that into a ``failed`` record.
    """
    import optuna
    import ray

    t0 = time.perf_counter()
    X, y, q = _training_set(payload, task, teacher_train)
    cls = task.student_cls or STUDENTS[task.student]
    history: list[float] = []
    tried: list[tuple[float, dict]] = []
    best: dict[str, Any] = {"score": None}

    def fit_and_score(params: dict[str, Any]) -> float:
        params = _budgeted(cls, params, task.budget)
        model = cls(**params, random_state=task.seed).fit(X, y, soft_targets=q)
        proba = model.predict_proba(payload["X_val"])
        s = score(task.metric, payload["y_val"], proba)
        history.append(s)
        tried.append((s, dict(params)))
        if best["score"] is None or better(task.metric, s, best["score"]):
            best.update(score=s, params=dict(params), model=model, val_proba=proba)
        return s

    if task.fixed_params is not None:
        fit_and_score(task.fixed_params)
    else:
        direction = "maximize" if HIGHER_IS_BETTER[task.metric] else "minimize"
        study = optuna.create_study(direction=direction, sampler=make_sampler(task))
        # stored parameters fill at most half the budget: the rest keeps exploring
        for params in task.warm_params[: max(1, task.n_trials // 2)]:
            study.enqueue_trial(params, skip_if_exists=True)
        study.optimize(lambda trial: fit_and_score(cls.suggest(trial)), n_trials=task.n_trials)
    # what is served: the best fit with its temperature undone and a calibrator chosen on validation
    served = (
        CalibratedStudent(best["model"], task.temperature).fit(payload["X_val"], payload["y_val"])
        if task.keep_model
        else None
    )
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""  # "" in-process (unit tests)
    return {
        "key": task.key,
        "status": "ok",
        "node_id": node,
        "attempt": _attempt(),
        "val_score": best["score"],
        "params": best["params"],
        "model": best["model"] if task.keep_model else None,
        "calibrated": served,
        "calibration": served.method_ if served else "",
        "val_proba": best["val_proba"],
        "history": history,
        "top": sorted(tried, key=lambda sp: -sp[0] if HIGHER_IS_BETTER[task.metric] else sp[0])[:3],
        "n_fits": len(history),
        "fit_seconds": time.perf_counter() - t0,
    }


def shared_payload(payload_box: list) -> tuple[dict, bool]:
    """The shared payload from the object store, and whether its arrays are zero-copy (read-only) views."""
    import ray

    payload = ray.get(payload_box[0])
    return payload, isinstance(payload_box[0], ray.ObjectRef) and not payload["teacher_train"].flags.writeable


def run_config(payload_box: list, task: ConfigTask) -> dict:
    """Body of the Ray task of one config (plain function so it can be unit-tested)."""
    payload, zero_copy = shared_payload(payload_box)
    return fit_config(payload, task, payload["teacher_train"]) | {"payload_zero_copy": zero_copy}


def run_configs(payload_box: list, tasks: list[ConfigTask]) -> list[dict]:
    """Body of the Ray task of a batch of cheap configs: one dispatch for several fits; each config fails alone."""
    payload, zero_copy = shared_payload(payload_box)
    out = []
    for task in tasks:
        try:
            rec = fit_config(payload, task, payload["teacher_train"])
        except Exception as exc:  # noqa: BLE001 - a config that raises is recorded, the batch goes on
            rec = failed_record(task, exc)
        out.append(rec | {"payload_zero_copy": zero_copy})
    return out


def failed_record(task: ConfigTask, exc: BaseException) -> dict:
    cause = getattr(exc, "cause", None) or exc  # a RayTaskError carries the exception raised in the task
    return {
        "key": task.key,
        "status": "failed",
        "error": f"{type(cause).__name__}: {cause}".splitlines()[0],
        "n_fits": 0,
        "history": [],
        "val_score": None,
        "params": task.fixed_params or {},
        "traceback": traceback.format_exception_only(type(exc), exc)[-1].strip(),
    }


def _attempt() -> int:
    """Which run of this task produced the result: 0, or how many times Ray re-ran it after a lost worker/node.

    Recorded by the task itself because Ray's state API forgets the attempts that died with their node.
    """
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_task_id() is None:
        return 0  # called in-process (unit tests), not as a Ray task
    return task_attempt_number()


def batch_size(n_configs: int, n_cpus: int, most: int = 4) -> int:
    """Configs per Ray task for cheap single fits: fewer dispatches, yet about two tasks per CPU to balance load."""
    return max(1, min(most, n_configs // (2 * max(1, n_cpus))))


class TaskQueue:
    """Config tasks on Ray that a driver can add to while it collects results (later phases start early).

    ``submit`` sends tasks to Ray at once (Ray runs them in order on free CPUs). ``hold`` keeps tasks with no
    dependencies back and submits one whenever fewer tasks than CPUs are running, so they fill the gaps
    that phase boundaries and a sequential chain leave instead of delaying the critical path.
    ``results(tasks)`` yields the records of those tasks as they finish; other records wait for their caller.
    """

    def __init__(self, payload_ref, progress: Callable[[str], None] | None = None, label: str = "configs"):
        import ray

        self.payload_ref, self.progress, self.label = payload_ref, progress, label
        self.n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._groups: dict[Any, list[ConfigTask]] = {}  # in flight: ObjectRef -> its tasks
        self._held: list[ConfigTask] = []
        self._finished: set[int] = set()
        self._ready: list[dict] = []
        self._n_tasks = self._n_done = self._n_failed = 0
        self._t0 = time.perf_counter()

    def submit(self, tasks: list[ConfigTask], batch: int = 1) -> None:
        """One Ray task per ``batch`` configs (``batch`` > 1 only for cheap single fits)."""
        for i in range(0, len(tasks), batch):
            group = resolve_students(tasks[i : i + batch])
            body = ray_task(run_config if len(group) == 1 else run_configs)
            self.track(body.remote([self.payload_ref], group[0] if len(group) == 1 else group), group)

    def hold(self, tasks: list[ConfigTask]) -> None:
        self._held += tasks
        self._n_tasks += len(tasks)

    def track(self, ref, tasks: list[ConfigTask]) -> None:
        """Follow a Ray task (of any body; tasks resolved with :func:`resolve_students`) returning records of ``tasks``."""
        self._groups[ref] = list(tasks)
        self._n_tasks += len(tasks)

    def results(self, tasks: list[ConfigTask]):
        """Yield the records of ``tasks`` as they finish (a body may return fewer records than tasks: a stopped chain)."""
        import ray

        want = {id(t) for t in tasks}
        while True:
            mine = [r for r in self._ready if id(r["task"]) in want]
            self._ready = [r for r in self._ready if id(r["task"]) not in want]
            yield from mine
            if want <= self._finished:
                return
            while self._held and len(self._groups) < self.n_cpus:
                task = self._held.pop(0)
                self._n_tasks -= 1
                self.submit([task])
            if not self._groups:
                raise RuntimeError("results() asked for tasks that were never submitted")
            ready, _ = ray.wait(list(self._groups), num_returns=1)
            self._collect(ready[0])

    def _collect(self, ref) -> None:
        import ray

        group = self._groups.pop(ref)
        try:
            out = ray.get(ref)
            recs = out if isinstance(out, list) else [out]
        except Exception as exc:  # noqa: BLE001 - the config failed in its task (or the task died for good): record, go on
            recs = [failed_record(task, exc) for task in group]
        for task, rec in zip(group, recs):
            rec["task"] = task
        self._finished |= {id(t) for t in group}
        self._ready += recs
        self._n_done += len(group)
        self._n_failed += sum(r["status"] == "failed" for r in recs)
        if self.progress:
            self.progress(
                f"{self.label}: {self._n_done}/{self._n_tasks} done"
                + (f", {self._n_failed} failed" if self._n_failed else "")
                + f" ({time.perf_counter() - self._t0:.0f}s)"
            )


def resolve_students(tasks: list[ConfigTask]) -> list[ConfigTask]:
    """Resolve student classes on the driver, so plug-in types registered there reach the workers."""
    for task in tasks:
        if task.student_cls is None and task.student in STUDENTS:
            task.student_cls = STUDENTS[task.student]
    return tasks


_REMOTES: dict[Callable, Any] = {}


def ray_task(fn: Callable):
    """The Ray remote function of a task body, made once (Ray exports a function per remote wrapper)."""
    import ray

    if fn not in _REMOTES:
        _REMOTES[fn] = ray.remote(**TASK_OPTIONS)(fn)
    return _REMOTES[fn]


def run_tasks(
    payload_ref, tasks: list[ConfigTask], progress: Callable[[str], None] | None = None, label: str = "configs"
) -> list[dict]:
    """One Ray task per config (Ray schedules them on free CPUs); the records in the order they finish."""
    queue = TaskQueue(payload_ref, progress, label)
    queue.submit(tasks)
    return list(queue.results(tasks))
