"""Staged rollout decisions: hold, expand to the next traffic step, roll back, or promote. Pure.

A step needs ``min_samples`` labelled requests on both variants, ``min_duration_s`` at the current step,
and challenger accuracy beating the champion's by ``min_improvement`` (relative). A challenger worse by
that margin, or erroring more than ``max_error_rate``, is rolled back. At the last step it is promoted
(through the registry's quality gates, by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from hpm_ray.config import Spec
from hpm_ray.serving.sequential import SequentialTest


class RolloutPolicy(Spec):
    steps: list[float] = Field(default_factory=lambda: [10.0, 25.0, 50.0, 100.0])
    min_samples: int = Field(200, ge=1)
    min_duration_s: float = Field(60.0, ge=0)
    min_improvement: float = Field(0.02, ge=0)
    max_error_rate: float = Field(0.05, ge=0, le=1)
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
    requests: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Decision:
    action: str  # "hold" | "expand" | "rollback" | "promote"
    reason: str
    traffic: float | None = None  # the challenger's new share (percent) for "expand"


def decide(policy: RolloutPolicy, traffic: float, seconds_at_step: float, champion: VariantStats, challenger: VariantStats) -> Decision:
    """What the rollout should do now, given the challenger's current share and both variants' stats."""
    if challenger.requests >= policy.min_requests_for_errors and challenger.error_rate > policy.max_error_rate:
        return Decision("rollback", f"challenger error rate {challenger.error_rate:.1%} > {policy.max_error_rate:.1%}")
    if traffic >= policy.steps[-1]:
        return Decision("promote", f"challenger at {traffic:g}% of traffic")
    if seconds_at_step < policy.min_duration_s:
        return Decision("hold", f"{seconds_at_step:.0f}s of {policy.min_duration_s:g}s at {traffic:g}%")
    if min(champion.labelled, challenger.labelled) < policy.min_samples:
        return Decision("hold", f"labelled requests champion={champion.labelled} challenger={challenger.labelled}, need {policy.min_samples} each")
    improvement = (challenger.accuracy - champion.accuracy) / max(champion.accuracy, 1e-9)
    detail = f"accuracy {challenger.accuracy:.3f} vs champion {champion.accuracy:.3f} ({improvement:+.1%})"
    if improvement >= policy.min_improvement:
        return Decision("expand", detail, policy.next_step(traffic))
    if improvement <= -policy.min_improvement:
        return Decision("rollback", f"challenger worse: {detail}")
    return Decision("hold", f"not decisive yet: {detail}")
