"""How the sequential test behaves on realistic label streams: error rate, power and time to a decision.

Each run replays a stream of labelled records and applies :mod:`hpm_ray.serving.sequential` after *every*
record, as the rollout may. The records are resampled per-row held-out log losses of real models on the
bundled credit data (``ab_losses.npz``, written by ``bench/ab_losses.py``): LightGBM for the champion and,
for the paired (shadow) design, a logistic regression on the same rows, rescaled to the champion's mean, so
the pairs keep the row-level correlation of two real models. The challenger's losses are multiplied by
``1 - effect`` (better) or ``1 + effect`` (worse); ``aa`` leaves them as they are (equal means), which
measures the false-decision rate. Runs are vectorised: all runs advance together through chunks of records
with running sums (``numpy.cumsum``); a run stops at its first decision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

import numpy as np

from hpm_ray.errors import SpecError
from hpm_ray.serving.sequential import (
    EXPAND,
    HOLD,
    ROLLBACK,
    SequentialTest,
    boundary,
    classify,
    sample_variance,
    unpaired_radius,
)

SCENARIOS = {"aa": 0.0, "better": -1.0, "worse": 1.0}  # sign of the relative change in the challenger's mean loss
_CHUNK = 2048  # records per step: runs x chunk float64 arrays stay ~30 MB at 2,000 runs


def load_losses() -> tuple[np.ndarray, np.ndarray]:
    """(champion, shadow) per-row log losses on the same held-out credit rows: LightGBM, logistic regression."""
    with resources.files("hpm_ray.serving").joinpath("ab_losses.npz").open("rb") as fh:
        data = np.load(fh)
        return data["lightgbm"].astype(float), data["logistic"].astype(float)


@dataclass(frozen=True)
class SimulationResult:
    scenario: str
    effect: float
    paired: bool
    runs: int
    promote: int
    rollback: int
    inconclusive: int
    median_labels: float | None  # labelled records to a decision, over the runs that decided
    median_hours: float | None  # hours to a decision (label delay included), over the runs that decided
    max_labels: int  # labelled records within the horizon
    seconds: float  # wall time of the simulation

    def interval(self, count: int) -> tuple[float, float]:
        """95 % Wilson interval of ``count / runs``."""
        from scipy.stats import binomtest

        ci = binomtest(count, self.runs).proportion_ci(confidence_level=0.95, method="wilson")
        return float(ci.low), float(ci.high)

    def summary(self) -> dict:
        """The fields ``hpm-ray ab simulate --json`` prints (rates as fractions)."""
        return {
            "runs": self.runs,
            "promote": self.promote / self.runs,
            "rollback": self.rollback / self.runs,
            "inconclusive": self.inconclusive / self.runs,
            "median_labels": self.median_labels,
            "median_hours": self.median_hours,
        }


def simulate(
    test: SequentialTest,
    scenario: str,
    effect: float = 0.02,
    paired: bool = False,
    challenger_share: float = 0.1,
    label_rate: float = 20.0,
    label_delay_s: float = 0.0,
    hours: float | None = None,
    runs: int = 2000,
    seed: int = 0,
) -> SimulationResult:
    """Run ``runs`` seeded rollouts of ``scenario`` and count their outcomes.

    ``challenger_share`` is the challenger's share of labelled records (unpaired); paired, every record is
    scored by both. ``hours`` defaults to the test's ``max_duration_s``; labels arrive ``label_delay_s`` after
    their prediction, so the last ``label_delay_s`` of the horizon bring none.

    Examples
    --------
    >>> r = simulate(SequentialTest(), "better", effect=0.02, paired=True, hours=1.0, runs=20, seed=1)
    >>> r.promote >= 15
    True
    """
    if scenario not in SCENARIOS:
        raise SpecError(f"--scenario: one of {', '.join(SCENARIOS)}, got {scenario!r}")
    if not (np.isfinite(effect) and 0 <= effect < 1):
        raise SpecError(f"--effect: a relative change in [0, 1), got {effect}")
    if not 0 < challenger_share < 1:
        raise SpecError(f"challenger share of traffic must be in (0, 1), got {challenger_share}")
    if not (np.isfinite(label_rate) and label_rate > 0) or not (np.isfinite(label_delay_s) and label_delay_s >= 0):
        raise SpecError("--label-rate must be > 0 and --label-delay-s >= 0")
    if runs < 1:
        raise SpecError(f"--runs must be at least 1, got {runs}")
    horizon_s = test.max_duration_s if hours is None else hours * 3600.0
    if not (np.isfinite(horizon_s) and horizon_s > 0):
        raise SpecError(f"--hours must be > 0, got {hours}")
    max_labels = int(label_rate * (horizon_s - label_delay_s)) if horizon_s > label_delay_s else 0
    if test.max_samples is not None:
        max_labels = min(max_labels, test.max_samples)
    if max_labels < 1:
        raise SpecError(f"no label arrives within {horizon_s / 3600:g} h at a {label_delay_s:g} s label delay")

    t0 = time.perf_counter()
    champion, shadow = load_losses()
    factor = 1.0 + SCENARIOS[scenario] * effect
    rng = np.random.default_rng(seed)
    step = _paired_chunk if paired else _unpaired_chunk
    if paired:
        pools = (champion, shadow * (champion.mean() / shadow.mean()) * factor)
    else:
        pools = (champion, champion * factor)
    sums = np.zeros((runs, 6))  # running sums carried between chunks (meaning depends on the design)
    outcome = np.full(runs, HOLD)
    decided_at = np.zeros(runs, dtype=np.int64)
    rho2 = test.rho2
    for start in range(0, max_labels, _CHUNK):
        live = np.flatnonzero(outcome == HOLD)
        if live.size == 0:
            break
        n = np.arange(start + 1, min(start + _CHUNK, max_labels) + 1, dtype=float)
        radius = boundary(n, test.alpha, rho2)
        codes = step(rng, pools, sums, live, n, radius, test, challenger_share)
        hit = codes != HOLD
        first = hit.argmax(axis=1)
        done = hit[np.arange(live.size), first]
        outcome[live[done]] = codes[done, first[done]]
        decided_at[live[done]] = start + first[done] + 1

    decided = outcome != HOLD
    labels = decided_at[decided]
    med = float(np.median(labels)) if labels.size else None
    return SimulationResult(
        scenario=scenario,
        effect=0.0 if scenario == "aa" else effect,
        paired=paired,
        runs=runs,
        promote=int((outcome == EXPAND).sum()),
        rollback=int((outcome == ROLLBACK).sum()),
        inconclusive=int((~decided).sum()),
        median_labels=med,
        median_hours=None if med is None else float(np.median(labels / label_rate + label_delay_s)) / 3600.0,
        max_labels=max_labels,
        seconds=time.perf_counter() - t0,
    )


def _carry(sums: np.ndarray, live: np.ndarray, col: int, chunk: np.ndarray) -> np.ndarray:
    """Running sum of ``chunk`` along records, continuing the run's total so far (and storing the new total)."""
    out = np.cumsum(chunk, axis=1)
    out += sums[live, col][:, None]
    sums[live, col] = out[:, -1]
    return out


def _paired_chunk(rng, pools, sums, live, n, radius, test, share) -> np.ndarray:
    champion, challenger = pools
    rows = rng.integers(0, champion.size, size=(live.size, n.size))
    base = champion[rows]
    d = challenger[rows] - base
    s, q, c = _carry(sums, live, 0, d), _carry(sums, live, 1, d * d), _carry(sums, live, 2, base)
    half = np.sqrt(sample_variance(n, s, q)) * radius
    mean = s / n
    codes = classify(mean - half, mean + half, c / n, test.margin)
    codes[:, n < test.min_labels] = HOLD
    return codes


def _unpaired_chunk(rng, pools, sums, live, n, radius, test, share) -> np.ndarray:
    champion, challenger = pools
    rows = rng.integers(0, champion.size, size=(live.size, n.size))
    arm = rng.random((live.size, n.size)) < share  # True: the challenger answered this record
    x = np.where(arm, challenger[rows], champion[rows])
    xa = np.where(arm, x, 0.0)
    n1 = _carry(sums, live, 0, arm.astype(float))
    s1, q1 = _carry(sums, live, 1, xa), _carry(sums, live, 2, xa * xa)
    s, q = _carry(sums, live, 3, x), _carry(sums, live, 4, x * x)
    n0 = n - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        m1, m0 = s1 / n1, (s - s1) / n0
        half = unpaired_radius(n0, sample_variance(n0, s - s1, q - q1), n1, sample_variance(n1, s1, q1), radius)
        codes = classify(m1 - m0 - half, m1 - m0 + half, m0, test.margin)
    codes[np.minimum(n0, n1) < test.min_labels] = HOLD
    return codes
