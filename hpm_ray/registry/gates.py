"""Quality gates: the metric bounds a model version must meet before it may become ``champion``.

Pure functions over a version's metrics (the ``metric.*`` tags written by
:func:`~hpm_ray.registry.models.log_and_register`), so the rules are tested without MLflow. Bounds are
per model kind; a metric name ending in ``_*`` applies to every per-class metric with that prefix
(``precision_0``, ``precision_1``, ...), and at least one such metric must exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpm_ray.errors import SpecError


@dataclass(frozen=True)
class Bound:
    """``low <= value <= high`` (``strict_high``: ``value < high``); ``None`` leaves a side open."""

    metric: str
    low: float | None = None
    high: float | None = None
    strict_high: bool = False

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and value < self.low:
            return False
        return not (self.high is not None and (value >= self.high if self.strict_high else value > self.high))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in [{self.low:g}, {self.high:g}" + (")" if self.strict_high else "]")
        if self.low is not None:
            return f">= {self.low:g}"
        return f"{'<' if self.strict_high else '<='} {self.high:g}"


# The seed's defaults.
DEFAULT_GATES: dict[str, tuple[Bound, ...]] = {
    "classifier": (
        Bound("accuracy", low=0.65),
        Bound("f1", low=0.65),
        Bound("precision_*", low=0.60),
        Bound("recall_*", low=0.60),
        Bound("mean_confidence", low=0.70),
    ),
    "quantile_forecaster": (
        Bound("coverage_90", low=0.87, high=0.93),
        Bound("coverage_50", low=0.47, high=0.53),
        Bound("crossing_rate", high=0.01, strict_high=True),
    ),
}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: tuple[str, ...]  # one readable line per failing or missing metric

    def summary(self) -> str:
        return "all gates pass" if self.passed else "; ".join(self.failures)


def gates_for(kind: str | None, overrides: dict[str, dict] | None = None) -> tuple[Bound, ...]:
    """The bounds for ``kind``; ``overrides`` maps a metric to ``{"low": .., "high": ..}`` replacing its default."""
    if kind not in DEFAULT_GATES:
        raise SpecError(f"no quality gates for model kind {kind!r}; expected one of {sorted(DEFAULT_GATES)}")
    bounds = {b.metric: b for b in DEFAULT_GATES[kind]}
    for metric, spec in (overrides or {}).items():
        if not isinstance(spec, dict):
            raise SpecError(f"gate {metric!r}: expected {{low: .., high: ..}}, got {spec!r}")
        unknown = set(spec) - {"low", "high", "strict_high"}
        if unknown:
            raise SpecError(f"gate {metric!r}: unknown settings {sorted(unknown)}")
        low, high = spec.get("low"), spec.get("high")
        for side, v in (("low", low), ("high", high)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise SpecError(f"gate {metric!r}: {side} must be a number, got {v!r}")
        if low is not None and high is not None and low > high:
            raise SpecError(f"gate {metric!r}: low {low:g} is above high {high:g}; no value could pass")
        bounds[metric] = Bound(metric, low, high, bool(spec.get("strict_high", False)))
    return tuple(bounds.values())


def evaluate_gates(kind: str | None, metrics: dict[str, float], overrides: dict[str, dict] | None = None) -> GateResult:
    """Check every bound of ``kind`` against ``metrics``; a missing metric is a failure, never a pass."""
    failures: list[str] = []
    for bound in gates_for(kind, overrides):
        if bound.metric.endswith("_*"):
            prefix = bound.metric[:-1]
            names = sorted(k for k in metrics if k.startswith(prefix))
            if not names:
                failures.append(f"{bound.metric}: missing (needs {bound.describe()})")
        else:
            names = [bound.metric]
        for name in names:
            if name not in metrics:
                failures.append(f"{name}: missing (needs {bound.describe()})")
            elif not bound.holds(float(metrics[name])):
                failures.append(f"{name}={float(metrics[name]):.4g} (needs {bound.describe()})")
    return GateResult(passed=not failures, failures=tuple(failures))


def classifier_metrics(y_true, proba, classes) -> dict[str, float]:
    """The classifier gate metrics from held-out labels and predicted probabilities (columns follow ``classes``).

    ``f1`` is macro-averaged so the minority class counts as much as the majority one.
    """
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=float)
    classes = list(classes)
    if p.ndim != 2 or p.shape != (len(y), len(classes)) or len(y) == 0:
        raise ValueError("proba must be (n_rows, n_classes) with n_rows == len(y_true) > 0")
    pred = np.asarray(classes)[p.argmax(axis=1)]
    out = {"accuracy": float(np.mean(pred == y)), "mean_confidence": float(p.max(axis=1).mean())}
    f1s = []
    for c in classes:
        tp = float(np.sum((pred == c) & (y == c)))
        precision = tp / max(float(np.sum(pred == c)), 1.0)
        recall = tp / max(float(np.sum(y == c)), 1.0)
        out[f"precision_{c}"] = precision
        out[f"recall_{c}"] = recall
        f1s.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    out["f1"] = float(np.mean(f1s))
    return out


def load_gate_file(path: str | Path) -> dict[str, dict[str, dict]]:
    """Read a gates YAML file: ``{kind: {metric: {low: .., high: ..}}}`` over the default gates."""
    from hpm_ray.config import read_yaml_mapping

    p = Path(path)
    data = read_yaml_mapping(p, "gates file")
    if not data or not all(isinstance(v, dict) for v in data.values()):
        raise SpecError(f"{p}: expected {{kind: {{metric: {{low: .., high: ..}}}}}}")
    for kind, overrides in data.items():  # a typo in a kind or a bound must not leave the defaults silently in force
        try:
            gates_for(kind, overrides)
        except SpecError as exc:
            raise SpecError(f"{p}: {exc}") from None
    return data
