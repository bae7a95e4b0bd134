"""Staged rollout decisions: hold, expand to the next traffic step, roll back, promote, or inconclusive. Pure.

In order: a challenger erroring more than ``max_error_rate``, or slower than ``max_p99_ms`` at the 99th
percentile, over its last ``guard_window`` requests is rolled back (guardrails); at the last step it
is promoted (through the registry's quality gates, by the caller); a sample-ratio mismatch (traffic at this
step not split as weighted, chi-square at ``test.srm_alpha``) holds; fewer than ``min_samples`` labelled
*requests* per variant holds (so one 1,000-row request cannot stand for a sample; ``test.min_labels`` counts
labelled *rows*). Then the anytime-valid sequential test of :mod:`hpm_ray.serving.sequential` on the
per-variant proper scores (:class:`ScoreStats`) decides: expand when it shows the challenger better (after
``min_duration_s`` at the step), roll back when worse, ``inconclusive`` (the experiment ends, the champion
keeps all traffic) at its time or sample limit, which also ends a rollout held for want of labels or by a
mismatch. Its false-decision rate is ``test.alpha`` however often this is called (``hpm-ray ab simulate``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from hpm_ray.config import Spec
from hpm_ray.serving.sequential import Moments, SequentialTest, evaluate, sample_ratio_mismatch


class RolloutPolicy(Spec):
    steps: list[float] = Field(default_factory=lambda: [10.0, 25.0, 50.0, 100.0])
    min_samples: int = Field(200, ge=1)  # labelled requests per variant before the test may decide
    min_duration_s: float = Field(60.0, ge=0)
    max_error_rate: float = Field(0.05, ge=0, le=1)
    max_p99_ms: float | None = Field(None, gt=0)  # challenger p99 latency above this: rolled back
    guard_window: int = Field(500, ge=1)  # guardrails judge each variant's last this many requests
    min_requests_for_errors: int = Field(20, ge=1)
    auto: bool = True
    test: SequentialTest = Field(default_factory=SequentialTest)  # the anytime-valid test on proper scores

    @field_validator("steps")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if not v or any(b <= a for a, b in zip(v, v[1:])) or v[0] <= 0 or v[-1] != 100:
            raise ValueError("steps must increase from > 0 and end at 100")
        return v

    def next_step(self, traffic: float) -> float:
        """The first step above ``traffic`` (100 when already at or past the last one)."""
        return next((s for s in self.steps if s > traffic + 1e-9), self.steps[-1])


@dataclass(frozen=True)
class VariantStats:
    requests: int = 0  # in the guardrails' window (the last ``guard_window`` requests)
    errors: int = 0  # in that window
    labelled: int = 0  # labelled requests in the experiment
    p99_ms: float | None = None  # latency over the window

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class ScoreStats:
    """Score moments (lower is better) since the experiment began, per variant; ``diffs`` when a shadow scores
    the champion's rows too (per-row challenger - champion), which the test then uses instead."""

    champion: Moments
    challenger: Moments
    elapsed_s: float  # since the experiment began: the test's max_duration_s counts from there
    diffs: Moments | None = None


@dataclass(frozen=True)
class Decision:
    action: str  # "hold" | "expand" | "rollback" | "promote" | "inconclusive" (champion keeps all traffic)
    reason: str
    traffic: float | None = None  # the challenger's new share (percent) for "expand"


def decide(
    policy: RolloutPolicy,
    traffic: float,
    seconds_at_step: float,
    champion: VariantStats,
    challenger: VariantStats,
    scores: ScoreStats,
    split: tuple[list[int], list[float]] | None = None,
) -> Decision:
    """What the rollout should do now, given the challenger's share, both variants' stats and scores, and
    ``split``: requests routed to (champion, challenger) at this step with the weights they were routed by.

    Examples
    --------
    >>> from hpm_ray.serving.sequential import Moments
    >>> s = ScoreStats(Moments.of([0.5, 0.7] * 500), Moments.of([0.2, 0.4] * 500), elapsed_s=600)
    >>> decide(RolloutPolicy(), 10, 120, VariantStats(labelled=500), VariantStats(labelled=500), s).action
    'expand'
    """
    if challenger.requests >= policy.min_requests_for_errors:
        if challenger.error_rate > policy.max_error_rate:
            return Decision(
                "rollback", f"challenger error rate {challenger.error_rate:.1%} > {policy.max_error_rate:.1%}"
            )
        if policy.max_p99_ms is not None and challenger.p99_ms is not None and challenger.p99_ms > policy.max_p99_ms:
            return Decision("rollback", f"challenger p99 latency {challenger.p99_ms:.0f} ms > {policy.max_p99_ms:g} ms")
    if traffic >= policy.steps[-1]:
        return Decision("promote", f"challenger at {traffic:g}% of traffic")
    test = policy.test
    out_of_time = scores.elapsed_s >= test.max_duration_s
    if split is not None:
        srm = sample_ratio_mismatch(*split, alpha=test.srm_alpha)
        if srm.mismatch:
            reason = f"sample ratio mismatch: routed {split[0]} for weights {split[1]} (chi-square p={srm.p_value:.2g})"
            return Decision("inconclusive" if out_of_time else "hold", reason)
    if min(champion.labelled, challenger.labelled) < policy.min_samples:
        reason = (
            f"labelled requests champion={champion.labelled} challenger={challenger.labelled}, "
            f"need {policy.min_samples} each"
        )
        return Decision("inconclusive" if out_of_time else "hold", reason)
    v = evaluate(test, scores.champion, scores.challenger, scores.elapsed_s, scores.diffs)
    if v.outcome == "expand" and seconds_at_step < policy.min_duration_s:
        return Decision("hold", f"{seconds_at_step:.0f}s of {policy.min_duration_s:g}s at {traffic:g}%; {v.reason}")
    if v.outcome == "expand":
        return Decision("expand", v.reason, policy.next_step(traffic))
    return Decision(v.outcome, v.reason)
