"""Staged rollout decisions (pure) with hand-set stats and score streams."""

import pytest

from hpm_ray.serving.policy import RolloutPolicy, ScoreStats, VariantStats, decide
from hpm_ray.serving.sequential import Moments

P = RolloutPolicy(min_samples=100, min_duration_s=10)
LABELLED = VariantStats(requests=500, labelled=500)


def scores(champion, challenger, elapsed_s=600.0, diffs=None):
    return ScoreStats(Moments.of(champion), Moments.of(challenger), elapsed_s, diffs)


BETTER = scores([0.5, 0.7] * 500, [0.2, 0.4] * 500)
WORSE = scores([0.2, 0.4] * 500, [0.5, 0.7] * 500)
SAME = scores([0.2, 0.7] * 500, [0.7, 0.2] * 500)


def test_next_step():
    assert [P.next_step(t) for t in (10, 25, 50, 100, 12)] == [25, 50, 100, 100, 25]


def test_expand_after_min_duration_and_roll_back_at_once():
    assert decide(P, 10, 5, LABELLED, LABELLED, BETTER).action == "hold"  # 5 s of 10 s at the step
    d = decide(P, 10, 11, LABELLED, LABELLED, BETTER)
    assert (d.action, d.traffic) == ("expand", 25) and "CS" in d.reason
    assert decide(P, 10, 0, LABELLED, LABELLED, WORSE).action == "rollback"


def test_min_samples_counts_labelled_requests_not_rows():
    # 1,000 labelled rows each, but in 99 requests on the challenger: not yet a sample
    d = decide(P, 10, 11, LABELLED, VariantStats(requests=99, labelled=99), BETTER)
    assert d.action == "hold" and "need 100 each" in d.reason
    # past the time limit a rollout that never got its sample ends inconclusive, champion kept
    late = scores([0.5] * 10, [0.2] * 10, elapsed_s=P.test.max_duration_s)
    assert decide(P, 10, 11, VariantStats(), VariantStats(), late).action == "inconclusive"


def test_sample_ratio_mismatch_holds_even_a_clear_result():
    d = decide(P, 10, 11, LABELLED, LABELLED, BETTER, split=([8_700, 1_300], [90.0, 10.0]))
    assert d.action == "hold" and "sample ratio mismatch" in d.reason
    assert decide(P, 10, 11, LABELLED, LABELLED, BETTER, split=([9_000, 1_000], [90.0, 10.0])).action == "expand"
    stuck = scores([0.5] * 500, [0.2] * 500, elapsed_s=P.test.max_duration_s)
    assert decide(P, 10, 11, LABELLED, LABELLED, stuck, split=([100, 900], [90.0, 10.0])).action == "inconclusive"


def test_inconclusive_at_the_time_limit_and_guardrails_first():
    same = scores([0.2, 0.7] * 500, [0.7, 0.2] * 500, elapsed_s=P.test.max_duration_s)
    assert decide(P, 10, 11, LABELLED, LABELLED, SAME).action == "hold"
    assert decide(P, 10, 11, LABELLED, LABELLED, same).action == "inconclusive"
    failing = VariantStats(requests=40, errors=3)
    d = decide(P, 10, 0, LABELLED, failing, same)
    assert d.action == "rollback" and "error rate 7.5%" in d.reason
    assert decide(P, 10, 0, LABELLED, VariantStats(requests=10, errors=3), SAME).action == "hold"  # too few to judge
    assert decide(P, 100, 0, LABELLED, LABELLED, same).action == "promote"


def test_p99_latency_guardrail():
    p = RolloutPolicy(min_samples=100, min_duration_s=10, max_p99_ms=250)
    slow = VariantStats(requests=40, labelled=500, p99_ms=400.0)
    d = decide(p, 10, 11, LABELLED, slow, BETTER)
    assert d.action == "rollback" and "p99 latency 400 ms > 250 ms" in d.reason
    assert decide(p, 10, 11, LABELLED, VariantStats(requests=40, labelled=500, p99_ms=200.0), BETTER).action == "expand"
    assert decide(P, 10, 11, LABELLED, slow, BETTER).action == "expand"  # no latency limit configured


def test_steps_validation():
    with pytest.raises(ValueError):
        RolloutPolicy(steps=[10, 5, 100])
    with pytest.raises(ValueError):
        RolloutPolicy(steps=[10, 50])
    with pytest.raises(ValueError):  # the accuracy rule's margin is gone: the test's own margin replaces it
        RolloutPolicy(min_improvement=0.02)
