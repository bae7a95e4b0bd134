"""Anytime-valid comparison of challenger and champion on a proper score (lower is better). Pure.

The rollout may look after every labelled record and stop the moment the evidence is clear, so a fixed-n test
is wrong here: peeking inflates its error rate without bound. A *confidence sequence* (CS) for the difference
``delta = mean score(challenger) - mean score(champion)`` covers ``delta`` at all times at once with probability
``>= 1 - alpha``, so a decision taken when the CS excludes zero is wrong with probability at most ``alpha``
whenever it is taken (asymptotically, see below).

The CS is the asymptotic CS of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas, "Time-uniform central limit
theory and asymptotic confidence sequences" (arXiv:2103.06476, 2021; Ann. Statist. 2024): after ``n``
records with mean ``m`` and sample standard deviation ``s``,

    m +- s * sqrt( 2 (n rho^2 + 1) / (n^2 rho^2) * log( sqrt(n rho^2 + 1) / alpha ) )

which is Robbins' two-sided normal-mixture boundary (Howard, Ramdas, McAuliffe and Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021) with the variance estimated from the
data. ``rho`` only moves where the CS is tightest; ``rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / n*``
makes it (nearly) tightest at ``n*`` records (:func:`best_rho2`, a closed-form approximation of the
width-minimising value, within 0.1 % of the numerical optimum, tested). Validity is asymptotic
(a strong approximation of the running mean by Brownian motion), which is why the simulator
(:mod:`hpm_ray.serving.simulate`) measures the real error rate on resampled real losses, and why no decision is
taken before ``min_labels`` records per variant.

Two designs:

- *unpaired* (an A/B split: each labelled row scored by the variant that answered it): the difference of the
  arm means, whose per-record variance ``n (v_ch / n_ch + v_cp / n_cp)`` (the influence-function variance of
  the difference of means in a randomised experiment, as in the paper's sequential A/B example) is estimated
  from both arms with ``v = max(v_ch, v_cp)`` for each: asymptotically no smaller than the true variance, so
  the CS stays valid, and a small arm (10 % of traffic) that has not yet met the long right tail of the log
  loss cannot shrink it while its mean also looks too good. Measured on 2,000 A/A runs of 4 h: false
  decisions 5.3 % with each arm's own variance, 3.5 % with the larger one (seed 0);
- *paired* (a shadow scores the same rows as the champion): the per-row differences, whose variance is far
  smaller when the two models' losses are correlated (0.86 for LightGBM vs logistic regression on the credit
  data), so far fewer labels decide.

Outcomes (:class:`Verdict`): ``expand`` when the whole CS lies below ``-margin x`` the champion's mean score
(better by at least the relative margin), ``rollback`` when it lies above zero (worse at all), ``inconclusive``
once ``max_duration_s`` or ``max_samples`` is reached without either (the champion stays), else ``hold``.
A sample-ratio-mismatch check (:func:`sample_ratio_mismatch`) tells whether traffic split as weighted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from hpm_ray.config import Spec

HOLD, EXPAND, ROLLBACK = 0, 1, 2  # codes of :func:`classify`, vectorised over many intervals (the simulator)


class SequentialTest(Spec):
    """Settings of the sequential test (``rollout.test`` in ``serve/ab.yaml``)."""

    score: Literal["log_loss", "brier", "pinball"] = "log_loss"  # pinball: mean over the quantiles, forecasters
    alpha: float = Field(0.05, gt=0, lt=1)  # bound on P(any wrong expand or rollback), looking after every record
    margin: float = Field(0.0, ge=0, lt=1)  # expand only if better by this fraction of the champion's mean score
    # labelled records at which the CS is tightest (sets rho): where the effects worth acting on are decided
    # at 20 labels/s (2 % paired, 10 % unpaired at a 10 % share: ~10k-20k, see ``hpm-ray ab simulate``)
    optimise_for: int = Field(20_000, ge=1)
    min_labels: int = Field(200, ge=2)  # per variant before any decision (the CS is asymptotic)
    max_duration_s: float = Field(4 * 3600.0, gt=0)  # then inconclusive: the champion stays
    max_samples: int | None = Field(None, ge=1)  # labelled records (pairs when paired); then inconclusive
    srm_alpha: float = Field(0.001, gt=0, lt=1)  # sample-ratio mismatch p-value below which the rollout holds

    @property
    def rho2(self) -> float:
        return best_rho2(self.optimise_for, self.alpha)


def best_rho2(n_opt: float, alpha: float) -> float:
    """``rho^2`` that makes the CS (nearly) tightest after ``n_opt`` records (Waudby-Smith et al. 2024)."""
    a = -2.0 * math.log(alpha)
    return (a + math.log(a + 1.0)) / n_opt


def boundary(n, alpha: float, rho2: float):
    """Radius of the CS for a mean of ``n`` records with unit variance; multiply by the standard deviation.

    Examples
    --------
    >>> round(float(boundary(10_000, 0.05, best_rho2(10_000, 0.05))), 5)
    0.03035
    """
    n = np.asarray(n, dtype=float)
    v = n * rho2 + 1.0
    return np.sqrt(2.0 * v / (n * n * rho2) * np.log(np.sqrt(v) / alpha))


def sample_variance(n, total, total_sq):
    """Unbiased variance from running sums (arrays welcome); 0 below two records."""
    n = np.asarray(n, dtype=float)
    total = np.asarray(total, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.maximum((total_sq - total * total / n) / (n - 1.0), 0.0)
    return v if np.all(n > 1) else np.where(n > 1, v, 0.0)  # the guard costs a full pass: only when needed


def classify(lower, upper, reference, margin: float):
    """:data:`EXPAND` where ``upper < -margin * reference``, :data:`ROLLBACK` where ``lower > 0``, else :data:`HOLD`."""
    lower, upper = np.asarray(lower), np.asarray(upper)
    better = upper < -margin * np.asarray(reference)
    return np.where(better, EXPAND, np.where(lower > 0, ROLLBACK, HOLD))


@dataclass(frozen=True)
class Moments:
    """Running count, sum and sum of squares of a score stream: all the test needs, mergeable, O(1) to update."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    @classmethod
    def of(cls, scores) -> Moments:
        x = np.asarray(scores, dtype=float).ravel()
        return cls(int(x.size), float(x.sum()), float(np.dot(x, x)))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")

    @property
    def variance(self) -> float:
        return float(sample_variance(self.n, self.total, self.total_sq))


@dataclass(frozen=True)
class Interval:
    """The CS for ``challenger - champion`` after ``n`` records (pairs when paired)."""

    estimate: float
    lower: float
    upper: float
    n: int
    paired: bool


def paired_interval(diffs: Moments, alpha: float, rho2: float) -> Interval:
    """CS for the mean per-row difference ``challenger - champion`` of scores on the same rows."""
    radius = math.sqrt(diffs.variance) * float(boundary(diffs.n, alpha, rho2))
    return Interval(diffs.mean, diffs.mean - radius, diffs.mean + radius, diffs.n, True)


def unpaired_radius(n_champion, var_champion, n_challenger, var_challenger, unit_radius):
    """Half-width of the unpaired CS (arrays welcome): ``sqrt(n v (1/n_ch + 1/n_cp)) * unit_radius``, where
    ``n = n_ch + n_cp``, ``v = max(v_ch, v_cp)`` and ``unit_radius`` is :func:`boundary` at ``n``."""
    n = n_champion + n_challenger
    v = np.maximum(var_champion, var_challenger)
    return n * np.sqrt(v / (n_champion * n_challenger)) * unit_radius


def unpaired_interval(champion: Moments, challenger: Moments, alpha: float, rho2: float) -> Interval:
    """CS for the difference of arm means ``challenger - champion`` (independent arms, see the module notes)."""
    n = champion.n + challenger.n
    delta = challenger.mean - champion.mean
    radius = float(
        unpaired_radius(champion.n, champion.variance, challenger.n, challenger.variance, boundary(n, alpha, rho2))
    )
    return Interval(delta, delta - radius, delta + radius, n, False)


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["hold", "expand", "rollback", "inconclusive"]
    reason: str
    interval: Interval | None = None


def evaluate(
    test: SequentialTest, champion: Moments, challenger: Moments, elapsed_s: float, diffs: Moments | None = None
) -> Verdict:
    """The test's verdict now, from each variant's score moments (and the per-row differences when paired).

    Examples
    --------
    >>> t = SequentialTest(min_labels=2)
    >>> cp, ch = Moments.of([0.5, 0.7] * 500), Moments.of([0.2, 0.4] * 500)
    >>> evaluate(t, cp, ch, elapsed_s=60.0).outcome
    'expand'
    """
    if min(champion.n, challenger.n) < test.min_labels:
        return Verdict(
            "inconclusive" if elapsed_s >= test.max_duration_s else "hold",
            f"labelled records champion={champion.n} challenger={challenger.n}, need {test.min_labels} each",
        )
    ci = (
        paired_interval(diffs, test.alpha, test.rho2)
        if diffs is not None
        else unpaired_interval(champion, challenger, test.alpha, test.rho2)
    )
    code = int(classify(ci.lower, ci.upper, champion.mean, test.margin))
    detail = (
        f"{test.score} challenger - champion {ci.estimate:+.4f}, {1 - test.alpha:.0%} CS "
        f"[{ci.lower:+.4f}, {ci.upper:+.4f}] after {ci.n} {'pairs' if ci.paired else 'records'}"
    )
    if code == EXPAND:
        return Verdict("expand", f"challenger better: {detail}", ci)
    if code == ROLLBACK:
        return Verdict("rollback", f"challenger worse: {detail}", ci)
    if elapsed_s >= test.max_duration_s or (test.max_samples is not None and ci.n >= test.max_samples):
        return Verdict("inconclusive", f"no difference shown by the limit, champion kept: {detail}", ci)
    return Verdict("hold", f"not decisive yet: {detail}", ci)


@dataclass(frozen=True)
class SampleRatio:
    statistic: float
    p_value: float
    mismatch: bool
    expected: tuple[float, ...]


def sample_ratio_mismatch(counts, weights, alpha: float = 0.001) -> SampleRatio:
    """Chi-square test of the observed per-variant counts against the configured weights.

    A split that differs from the weights (a variant failing silently, a sticky key that skews) biases any
    comparison, so the rollout holds on a mismatch. ``alpha`` is small because the check is repeated.

    Examples
    --------
    >>> sample_ratio_mismatch([9_000, 1_000], [90, 10]).mismatch
    False
    >>> sample_ratio_mismatch([8_700, 1_300], [90, 10]).mismatch
    True
    """
    from scipy.stats import chisquare

    f_obs = np.asarray(counts, dtype=float)
    w = np.asarray(weights, dtype=float)
    if f_obs.shape != w.shape or f_obs.ndim != 1 or (f_obs < 0).any() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("counts and weights: one non-negative number per variant, some weight > 0")
    total = f_obs.sum()
    expected = total * w / w.sum()
    exp_tuple = tuple(float(e) for e in expected)
    if total == 0:
        return SampleRatio(0.0, 1.0, False, exp_tuple)
    if (f_obs[w == 0] > 0).any():  # traffic where none was sent
        return SampleRatio(math.inf, 0.0, True, exp_tuple)
    live = w > 0
    if live.sum() < 2:
        return SampleRatio(0.0, 1.0, False, exp_tuple)
    res = chisquare(f_obs[live], expected[live])
    return SampleRatio(float(res.statistic), float(res.pvalue), bool(res.pvalue < alpha), exp_tuple)
