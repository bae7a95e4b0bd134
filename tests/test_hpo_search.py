"""What the Tuner's searcher tells Optuna, driven through Tune's searcher calls without starting Ray."""

from __future__ import annotations

import math

import optuna

from hpm_ray.hpo.learners import get_learner
from hpm_ray.hpo.search import SearchSettings, make_searcher
from hpm_ray.hpo.space import tune_space
from hpm_ray.hpo.trainable import METRIC


def _report(it: int, score: float) -> dict:
    return {METRIC: score, "training_iteration": it, "rounds": 20 * it}


def test_optuna_is_told_each_trials_best_report_not_its_last(tmp_path):
    s = SearchSettings(
        name="t",
        storage=str(tmp_path),
        num_samples=4,
        max_reports=3,
        grace_period=1,
        reduction_factor=3,
        max_concurrent=1,
        seed=0,
        space=get_learner("lightgbm").space,
    )
    searcher = make_searcher(s)
    assert searcher.set_search_properties(METRIC, "min", tune_space(s.space))
    for t in "abcd":
        assert searcher.suggest(t)
    # a: improves, then overfits at its last report
    for it, v in ((1, 0.5), (2, 0.3)):
        searcher.on_trial_result("a", _report(it, v))
    searcher.on_trial_complete("a", _report(3, 0.4))
    # b: ASHA stops it on a report that reaches the searcher only with the completion
    searcher.on_trial_result("b", _report(1, 0.6))
    searcher.on_trial_complete("b", _report(2, 0.2))
    # c: its node died after two reports; the restarted attempt reports iterations 1-3 again (its values count)
    for it, v in ((1, 0.1), (2, 0.15), (1, 0.7), (2, 0.65)):
        searcher.on_trial_result("c", _report(it, v))
    searcher.on_trial_complete("c", _report(3, 0.66))
    # d: failed before any report
    searcher.on_trial_complete("d", None, error=True)

    trials = {t.number: t for t in searcher._ot_study.trials}
    assert [trials[i].value for i in range(3)] == [0.3, 0.2, 0.65]  # the old searcher told 0.4, 0.2, 0.66
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in list(trials.values())[:3])
    assert trials[3].state == optuna.trial.TrialState.FAIL
    assert searcher._reports == {}  # nothing kept for finished trials


def test_best_so_far_skips_missing_and_non_finite_scores():
    from hpm_ray.hpo.search import best_so_far

    assert best_so_far([0.4, math.nan, None, 0.2, math.inf]) == 0.2
    assert best_so_far([math.nan, None]) is None


def test_only_a_lost_actor_worker_or_node_counts_as_lost():
    from ray.exceptions import ActorDiedError, NodeDiedError, RayTaskError

    from hpm_ray.hpo.search import lost_worker

    assert lost_worker(ActorDiedError()) and lost_worker(NodeDiedError("node gone"))
    # a config that raises by itself comes back as a task error: re-running it would fail again
    assert not lost_worker(RayTaskError("train", "Traceback ...", ValueError("num_leaves must be > 1")))
    assert not lost_worker(None) and not lost_worker("Failure # 1: ActorDiedError (text trace only)")


def test_cpus_are_shared_so_every_horizon_progresses():
    from hpm_ray.hpo.search import share_cpus

    assert share_cpus(16, 4) == (4, 1.0)  # enough cores: whole CPUs, 4 trials per horizon
    assert share_cpus(2, 4) == (1, 0.5)  # fewer cores than horizons: one trial each at half a CPU
    assert share_cpus(2, 1, max_concurrent=4) == (4, 0.5)  # the spec's cap wins, the CPUs are split


def test_a_horizons_settings_come_from_the_spec():
    from hpm_ray.hpo.search import SearchSettings
    from hpm_ray.hpo.spec import HPOSpec

    spec = HPOSpec(horizons=[6, 12], seed=3, trials_per_horizon=7, points_to_evaluate=[])
    s = SearchSettings.for_horizon(spec, 12, (), name="x-h12", storage="/tmp/x", max_concurrent=2)
    assert (s.seed, s.num_samples, s.key, s.max_concurrent) == (15, 7, "12", 2)
    assert (s.grace_period, s.reduction_factor, s.max_reports) == (
        spec.grace_period,
        spec.reduction_factor,
        spec.max_reports,
    )
