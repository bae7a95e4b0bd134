"""Staged rollout decisions (pure) with hand-set stats."""

import pytest

from hpm_ray.serving.policy import RolloutPolicy, ScoreStats, VariantStats, decide
from hpm_ray.serving.sequential import Moments

P = RolloutPolicy(min_samples=100, min_duration_s=10, min_improvement=0.02)


def stats(labelled, correct, requests=None, errors=0):
    return VariantStats(
        requests=requests if requests is not None else labelled, errors=errors, labelled=labelled, correct=correct
    )


def test_next_step():
    assert [P.next_step(t) for t in (10, 25, 50, 100, 12)] == [25, 50, 100, 100, 25]


def test_hold_until_duration_and_samples():
    assert decide(P, 10, 5, stats(500, 400), stats(500, 450)).action == "hold"
    d = decide(P, 10, 11, stats(500, 400), stats(99, 90))
    assert d.action == "hold" and "need 100 each" in d.reason


def test_expand_when_better_by_margin():
    # champion 0.80, challenger 0.82: +2.5 % relative >= 2 %
    d = decide(P, 25, 11, stats(1000, 800), stats(500, 410))
    assert (d.action, d.traffic) == ("expand", 50)


def test_hold_inside_margin_and_rollback_when_worse():
    assert decide(P, 10, 11, stats(1000, 800), stats(500, 405)).action == "hold"  # +1.25 %
    d = decide(P, 10, 11, stats(1000, 800), stats(500, 390))  # -2.5 %
    assert d.action == "rollback" and "worse" in d.reason


def test_errors_roll_back_even_before_samples():
    d = decide(P, 10, 0, stats(0, 0), VariantStats(requests=40, errors=3))
    assert d.action == "rollback" and "error rate 7.5%" in d.reason
    assert decide(P, 10, 0, stats(0, 0), VariantStats(requests=10, errors=3)).action == "hold"  # too few to judge


def test_promote_at_last_step():
    assert decide(P, 100, 0, stats(0, 0), stats(0, 0)).action == "promote"


def test_steps_validation():
    with pytest.raises(ValueError):
        RolloutPolicy(steps=[10, 5, 100])
    with pytest.raises(ValueError):
        RolloutPolicy(steps=[10, 50])


# --- with per-variant score streams: the sequential test decides --------------------------------------------


def scores(champion, challenger, elapsed_s=600.0, diffs=None):
    return ScoreStats(Moments.of(champion), Moments.of(challenger), elapsed_s, diffs)


def test_score_streams_expand_after_min_duration_and_roll_back_at_once():
    better = scores([0.5, 0.7] * 500, [0.2, 0.4] * 500)
    assert decide(P, 10, 5, stats(0, 0), stats(0, 0), better).action == "hold"  # 5 s of 10 s at the step
    d = decide(P, 10, 11, stats(0, 0), stats(0, 0), better)
    assert (d.action, d.traffic) == ("expand", 25) and "CS" in d.reason
    worse = scores([0.2, 0.4] * 500, [0.5, 0.7] * 500)
    assert decide(P, 10, 0, stats(0, 0), stats(0, 0), worse).action == "rollback"


def test_score_streams_inconclusive_at_the_time_limit_and_guardrails_first():
    same = scores([0.2, 0.7] * 500, [0.7, 0.2] * 500, elapsed_s=P.test.max_duration_s)
    assert decide(P, 10, 11, stats(0, 0), stats(0, 0), same).action == "inconclusive"
    failing = VariantStats(requests=40, errors=3)
    assert "error rate" in decide(P, 10, 11, stats(0, 0), failing, same).reason
    assert decide(P, 100, 0, stats(0, 0), stats(0, 0), same).action == "promote"
    # accuracy would roll back (-2.5 %), the scores alone decide when given
    assert decide(P, 10, 11, stats(1000, 800), stats(500, 390), same).action == "inconclusive"
