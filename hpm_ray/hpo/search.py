"""One Ray Tune experiment per horizon (OptunaSearch TPE + ASHA), run as a Ray task so horizons run concurrently.

Several Tuners in threads of one driver crash in Ray 2.60 (Tune's parameter registry is not thread-safe), so
each Tuner lives in its own ``num_cpus=0`` task; its trials take the CPUs. Progress flows back through a small
named actor the driver polls, because worker stdout is not forwarded when Ray runs quietly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ray
from ray import tune
from ray.exceptions import NodeDiedError, RayActorError, WorkerCrashedError
from ray.tune.search.optuna import OptunaSearch

from hpm_ray.hpo.space import Param, tune_space
from hpm_ray.hpo.trainable import METRIC, tune_trainable

if TYPE_CHECKING:
    from hpm_ray.hpo.spec import HPOSpec

# Restarts of a trial whose worker or node died (a config that crashes by itself also gets them).
TRIAL_RETRIES = 3
# Tune's settings that exist only as environment variables, given to the search task's worker through Ray's
# runtime_env (never the caller's os.environ). Tune saves the experiment state at most every 10 s by default; a
# kill -9 then loses (and a resume repeats) trials finished since, while saving on every controller step costs
# milliseconds per step. Auto loggers are off: result.json comes from the explicit JsonLoggerCallback. The old
# output engine with verbose=0 prints nothing (the new one ignores reporters and prints ~12 lines per search).
TUNE_ENV = {
    "TUNE_GLOBAL_CHECKPOINT_S": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_TRAIN_V2_ENABLED": "0",
}


@dataclass(frozen=True)
class SearchSettings:
    """What a Tuner needs besides the data (plain values: it is shipped to a Ray task)."""

    name: str  # experiment folder name under ``storage``
    storage: str
    num_samples: int
    max_reports: int
    grace_period: int
    reduction_factor: int
    max_concurrent: int
    seed: int
    space: tuple[Param, ...]  # the learner's search space
    trial_cpus: float = 1.0
    points_to_evaluate: list = field(default_factory=list)
    progress_actor: str | None = None
    key: str = ""  # the horizon, as shown in progress lines

    @classmethod
    def for_horizon(cls, spec: HPOSpec, h: int, space: tuple[Param, ...], *, name: str, storage: str, **kw):
        """One horizon's settings from the job's spec: the driver and ``bench/hpo.py`` build them alike."""
        return cls(
            name=name,
            storage=storage,
            num_samples=spec.trials_per_horizon,
            max_reports=spec.max_reports,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
            seed=spec.seed + h,
            space=space,
            points_to_evaluate=spec.points_to_evaluate,
            key=str(h),
            **kw,
        )


def share_cpus(cpus: int, n_experiments: int, max_concurrent: int | None = None) -> tuple[int, float]:
    """Concurrent trials per experiment and CPUs per trial.

    With more experiments than CPUs the cores are shared (fractional CPUs) so that every horizon progresses;
    learners run one thread per trial.
    """
    concurrent = max_concurrent or max(1, cpus // n_experiments)
    return concurrent, min(1.0, cpus / (n_experiments * concurrent))


@dataclass
class TrialRecord:
    """One finished trial as the driver logs it: config, per-report history, pruned / failed."""

    trial_id: str
    config: dict
    history: list[tuple[int, float]]  # (rounds, val_pinball) per report
    pruned: bool
    error: str | None
    node_id: str | None = None  # the Ray node of its last attempt

    @property
    def best(self) -> tuple[int, float] | None:
        return min(self.history, key=lambda h: h[1]) if self.history else None


@ray.remote(num_cpus=0)
class Progress:
    """Latest counts per horizon, written by the Tune callbacks, read by the driver."""

    def __init__(self):
        self.state: dict[str, dict] = {}

    def set(self, key: str, snapshot: dict) -> None:
        self.state[key] = snapshot

    def get(self) -> dict:
        return self.state


class ProgressCallback(tune.Callback):
    """Sends done / pruned / failed / running counts and the best pinball so far to the ``Progress`` actor.

    Looks the actor up by name on every event, so a restored experiment (whose pickled callbacks outlive the
    driver that created them) reports to the new driver's actor; a missing actor never fails the search.
    """

    def __init__(self, actor_name: str | None, key: str, max_reports: int):
        self.actor_name, self.key, self.max_reports = actor_name, key, max_reports

    def _send(self, trials) -> None:
        if not self.actor_name:
            return
        done = [t for t in trials if t.status == "TERMINATED"]
        bests = [t.metric_analysis.get(METRIC, {}).get("min") for t in trials]
        bests = [b for b in bests if b is not None and math.isfinite(b)]
        snap = dict(
            done=len(done),
            pruned=sum(1 for t in done if _is_pruned(t.last_result, self.max_reports)),
            failed=sum(1 for t in trials if t.status == "ERROR"),
            running=sum(1 for t in trials if t.status == "RUNNING"),
            best=min(bests) if bests else None,
        )
        try:
            ray.get_actor(self.actor_name).set.remote(self.key, snap)
        except ValueError:  # the driver that owned the actor is gone
            pass

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._send(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._send(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._send(trials)


def _is_pruned(last_result: dict | None, max_reports: int) -> bool:
    """ASHA stopped it: it finished without an error before reaching the last report."""
    return bool(last_result) and last_result.get("training_iteration", 0) < max_reports


def experiment_path(s: SearchSettings) -> str:
    return f"{s.storage.rstrip('/')}/{s.name}"


def build_trainable(data_ref, name: str):
    """The Tune trainable with one horizon's data bound by ObjectRef: stored once, shared by every trial.

    Tune registers trainables cluster-wide by function name per job, so concurrent Tuners of one driver that
    share a name overwrite each other's bound data (trials of one horizon silently train on another's). Each
    experiment therefore gets its own function object named after it.
    """

    def trial(config: dict, data) -> None:
        tune_trainable(config, data)

    trial.__name__ = trial.__qualname__ = name
    return tune.with_parameters(trial, data=data_ref)


class BestReportOptunaSearch(OptunaSearch):
    """OptunaSearch that tells the study each trial's best report, the score the driver selects on.

    Tune hands its searcher a finished trial's *last* result (``on_trial_complete``), but a trial's score here is
    its best report (rounds act as validated early stopping, ``runner._best``): a trial that overfits late would
    teach TPE a worse score than the one it is selected on. Reports are kept per training iteration, so a trial
    restarted after its node died counts each report once, its last attempt's (as ``records`` does).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reports: dict[str, dict[int, float]] = {}

    def _keep(self, trial_id: str, result: dict | None) -> None:
        if result and self.metric in result and "training_iteration" in result:
            self._reports.setdefault(trial_id, {})[int(result["training_iteration"])] = result[self.metric]

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._keep(trial_id, result)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._keep(trial_id, result)  # the result ASHA stops a trial on reaches only this call
        best = best_so_far(self._reports.pop(trial_id, {}).values())
        if result and best is not None:
            result = {**result, self.metric: best}
        super().on_trial_complete(trial_id, result, error)


def make_searcher(s: SearchSettings) -> BestReportOptunaSearch:
    """The Tuner's searcher: TPE seeded per horizon, optional starting points."""
    return BestReportOptunaSearch(
        metric=METRIC, mode="min", seed=s.seed, points_to_evaluate=s.points_to_evaluate or None
    )


def best_so_far(scores) -> float | None:
    """The lowest finite score, or None when there is none (Optuna then records the trial as pruned)."""
    finite = [float(v) for v in scores if v is not None and math.isfinite(v)]
    return min(finite) if finite else None


def make_tuner(s: SearchSettings, data_ref) -> tune.Tuner:
    """A new Tuner, or the interrupted one with its searcher and scheduler state when its folder has one.

    Experiment names carry the run id, so saved state under ``s.name`` is this run's own: ``--resume`` finds
    it, and so does Ray's retry of a search task whose worker died (a fresh Tuner would drop finished trials).

    When ASHA stops a trial, Tune completes it with its last result (ray/tune/execution/tune_controller.py,
    ``_process_trial_result`` -> ``on_trial_complete``) and the searcher tells the study the trial's best report
    (:func:`make_searcher`), so TPE learns from pruned trials too, on the score the driver selects on.
    Errored trials are not re-run on resume: a crashing config crashes again.
    """
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    trainable = _trainable(s, data_ref)
    if tune.Tuner.can_restore(experiment_path(s)):
        return _restore(s, trainable, resume_errored=False)
    searcher = make_searcher(s)
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=s.max_reports,
        grace_period=min(s.grace_period, s.max_reports),
        reduction_factor=s.reduction_factor,
    )
    return tune.Tuner(
        trainable,
        param_space=tune_space(s.space),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=s.num_samples,
            max_concurrent_trials=s.max_concurrent,
            # Trial actors are reused (a worker start costs 1-3 s per trial), on clusters too: see run_search.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=s.name,
            storage_path=s.storage,
            verbose=0,
            # A trial whose node dies is restarted elsewhere (from scratch: trials keep no checkpoint).
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES, fail_fast=False),
            # result.json per trial: the per-report history the driver logs to MLflow (auto loggers are off).
            callbacks=[JsonLoggerCallback(), ProgressCallback(s.progress_actor, s.key, s.max_reports)],
        ),
    )


def _trainable(s: SearchSettings, data_ref):
    return tune.with_resources(build_trainable(data_ref, s.name), {"cpu": s.trial_cpus})


def _restore(s: SearchSettings, trainable, resume_errored: bool) -> tune.Tuner:
    return tune.Tuner.restore(
        experiment_path(s), trainable=trainable, resume_unfinished=True, resume_errored=resume_errored
    )


def lost_worker(error: BaseException | str | None) -> bool:
    """The trial failed because its actor, worker or node died, not because its config raised."""
    return isinstance(error, (RayActorError, NodeDiedError, WorkerCrashedError))


def records(result_grid, max_reports: int) -> list[TrialRecord]:
    """Plain per-trial records from a ResultGrid (kept small: they travel back to the driver)."""
    out = []
    for r in result_grid:
        df = r.metrics_dataframe
        hist = {}
        if df is not None and METRIC in df:
            # a trial restarted after its node died reports its first rounds again: keep the last attempt's
            hist = {int(a): float(b) for a, b in zip(df["rounds"], df[METRIC])}
        tid = (r.metrics or {}).get("trial_id") or r.path.rstrip("/").rsplit("/", 1)[-1]
        err = None if r.error is None else (str(r.error).strip().splitlines() or [type(r.error).__name__])[-1][:300]
        out.append(
            TrialRecord(
                tid,
                dict(r.config or {}),
                sorted(hist.items()),
                err is None and _is_pruned(r.metrics, max_reports),
                err,
                (r.metrics or {}).get("node_id"),
            )
        )
    return out


@ray.remote(num_cpus=0, runtime_env={"env_vars": TUNE_ENV})
def run_search(s: SearchSettings, data_ref_box: list) -> list[TrialRecord]:
    """Run (or resume) one horizon's experiment to completion; ``data_ref_box`` keeps the ref un-resolved.

    Trial actors are reused, and Tune 2.60 hands a new trial an actor cached by a finished one: if that actor's
    node died meanwhile, the trial fails while still PENDING, and ``_process_trial_failure``
    (ray/tune/execution/tune_controller.py) retries only RUNNING trials, so it ends in ERROR whatever
    ``FailureConfig.max_failures`` says. Such trials are re-run here by restoring the experiment with
    ``resume_errored`` (same trial ids, from scratch: trials keep no checkpoint); a config that raises by itself
    runs again with them, and fails again. The study was already told these trials failed, so TPE does not learn
    from their re-run (the driver still selects on it). Each round needs another lost worker: at most
    ``TRIAL_RETRIES`` rounds.
    """
    results = make_tuner(s, data_ref_box[0]).fit()
    for _ in range(TRIAL_RETRIES):
        if not any(lost_worker(r.error) for r in results):
            break
        results = _restore(s, _trainable(s, data_ref_box[0]), resume_errored=True).fit()
    return records(results, s.max_reports)
