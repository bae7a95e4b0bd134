"""Quality gates (pure): per-kind bounds, per-class wildcards, missing metrics, overrides, and the metrics."""

import numpy as np
import pytest

from hpm_ray.errors import SpecError
from hpm_ray.registry.gates import Bound, classifier_metrics, evaluate_gates, load_gate_file

GOOD_CLF = {
    "accuracy": 0.80,
    "f1": 0.70,
    "precision_0": 0.85,
    "precision_1": 0.61,
    "recall_0": 0.9,
    "recall_1": 0.60,
    "mean_confidence": 0.75,
}
GOOD_Q = {"coverage_90": 0.90, "coverage_50": 0.50, "crossing_rate": 0.0}


def test_classifier_passing_metrics_pass():
    r = evaluate_gates("classifier", GOOD_CLF)
    assert r.passed and r.failures == ()


def test_classifier_per_class_failure_names_the_class():
    r = evaluate_gates("classifier", {**GOOD_CLF, "recall_1": 0.35, "accuracy": 0.64})
    assert not r.passed
    assert [f.split("=")[0] for f in r.failures] == ["accuracy", "recall_1"]
    assert "recall_1=0.35 (needs >= 0.6)" in r.failures


def test_missing_metrics_fail_never_pass():
    r = evaluate_gates("classifier", {"accuracy": 0.9, "auc": 0.8})
    assert not r.passed
    assert any(f.startswith("precision_*: missing") for f in r.failures)
    assert any(f.startswith("f1: missing") for f in r.failures)


@pytest.mark.parametrize(
    "change, failing",
    [
        ({}, []),
        ({"coverage_90": 0.86}, ["coverage_90"]),
        ({"coverage_90": 0.93}, []),
        ({"coverage_90": 0.931}, ["coverage_90"]),
        ({"coverage_50": 0.46}, ["coverage_50"]),
        ({"crossing_rate": 0.01}, ["crossing_rate"]),
        ({"crossing_rate": 0.0099}, []),
    ],
)
def test_quantile_bounds_edges(change, failing):
    r = evaluate_gates("quantile_forecaster", {**GOOD_Q, **change})
    assert [f.split("=")[0] for f in r.failures] == failing


def test_nan_metric_fails():
    assert not evaluate_gates("quantile_forecaster", {**GOOD_Q, "coverage_50": float("nan")}).passed


def test_overrides_replace_one_bound_and_unknown_kind_is_an_error():
    metrics = {**GOOD_CLF, "recall_1": 0.35}
    assert not evaluate_gates("classifier", metrics).passed
    assert evaluate_gates("classifier", metrics, {"recall_*": {"low": 0.3}}).passed
    with pytest.raises(SpecError, match="no quality gates for model kind 'ranker'"):
        evaluate_gates("ranker", metrics)
    with pytest.raises(SpecError, match="unknown settings"):
        evaluate_gates("classifier", metrics, {"f1": {"minimum": 0.1}})


@pytest.mark.parametrize(
    "text, match",
    [
        ("classifier: {f1: {low: [oops}", "not valid YAML"),
        ("nosuchkind: {f1: {low: 0.1}}", "no quality gates for model kind 'nosuchkind'"),
        ("classifier: {f1: {low: abc}}", "gate 'f1': low must be a number"),
        ("quantile_forecaster: {coverage_90: {low: 0.95, high: 0.9}}", "low 0.95 is above high 0.9"),
        ("classifier: {f1: 0.7}", "gate 'f1': expected {low: .., high: ..}"),
    ],
)
def test_a_bad_gates_file_is_refused_when_read(tmp_path, text, match):
    path = tmp_path / "gates.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SpecError, match=match) as err:
        load_gate_file(path)
    assert str(path) in str(err.value) and len(str(err.value).splitlines()) == 1


def test_bound_describe():
    assert Bound("x", 0.47, 0.53).describe() == "in [0.47, 0.53]"
    assert Bound("x", high=0.01, strict_high=True).describe() == "< 0.01"


def test_classifier_metrics_hand_computed():
    y = np.array([0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])
    # predictions: 0, 1, 1, 0, 1 -> correct 0, 2, 4 => accuracy 3/5
    m = classifier_metrics(y, proba, [0, 1])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision_0"] == pytest.approx(1 / 2) and m["recall_0"] == pytest.approx(1 / 2)
    assert m["precision_1"] == pytest.approx(2 / 3) and m["recall_1"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["mean_confidence"] == pytest.approx((0.9 + 0.6 + 0.8 + 0.7 + 0.9) / 5)
