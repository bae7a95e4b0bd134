"""Pure math of distillation: soft targets, weighted duplication, fusion, temperature choice, new metrics."""

import numpy as np
import pytest

from hpm_ray import metrics as M
from hpm_ray.distill import fusion
from hpm_ray.distill.soft_targets import expand_rows, one_hot, soft_targets, soften
from hpm_ray.distill.temperature import DivergenceTemperature, FixedGrid
from hpm_ray.errors import DataError, SpecError


def test_soften_by_hand():
    # softmax(log p / 2) = sqrt(p) normalised: [sqrt(.8), sqrt(.2)] / (sqrt(.8) + sqrt(.2)) = [2/3, 1/3]
    np.testing.assert_allclose(soften(np.array([[0.8, 0.2]]), 2.0), [[2 / 3, 1 / 3]])
    # T = 1 gives the teacher back; T = 0.5 squares and renormalises: [.64, .04] / .68
    np.testing.assert_allclose(soften(np.array([0.2]), 1.0), [[0.8, 0.2]])
    np.testing.assert_allclose(soften(np.array([[0.8, 0.2]]), 0.5), [[0.64 / 0.68, 0.04 / 0.68]])
    # very high T flattens towards uniform, also for three classes
    np.testing.assert_allclose(soften(np.array([[0.7, 0.2, 0.1]]), 1e6), [[1 / 3] * 3], atol=1e-5)


def test_soft_targets_mix_by_hand():
    p = np.array([[0.8, 0.2], [0.4, 0.6]])
    q = soft_targets(p, np.array([0, 0]), temperature=2.0, alpha=0.5)
    # row 0: 0.5 * [2/3, 1/3] + 0.5 * [1, 0]; row 1: softened [sqrt(.4), sqrt(.6)] / sum
    s1 = np.sqrt([0.4, 0.6]) / np.sqrt([0.4, 0.6]).sum()
    np.testing.assert_allclose(q, [[5 / 6, 1 / 6], 0.5 * s1 + [0.5, 0.0]])
    np.testing.assert_allclose(soft_targets(p, np.array([1, 0]), 3.0, 0.0), one_hot([1, 0], 2))
    np.testing.assert_allclose(q.sum(axis=1), 1.0)


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan")])
def test_bad_temperature(t):
    with pytest.raises(SpecError, match="temperature"):
        soft_targets(np.array([0.3]), np.array([1]), t, 0.5)


@pytest.mark.parametrize("a", [-0.1, 1.5])
def test_bad_alpha(a):
    with pytest.raises(SpecError, match="alpha"):
        soft_targets(np.array([0.3]), np.array([1]), 1.0, a)


def test_bad_teacher_probabilities():
    with pytest.raises(DataError, match="non-finite"):
        soft_targets(np.array([0.3, np.nan]), np.array([1, 0]), 1.0, 0.5)
    with pytest.raises(DataError, match="not probabilities"):
        soft_targets(np.array([[0.9, 0.9]]), np.array([1]), 1.0, 0.5)
    with pytest.raises(DataError, match="rows"):
        soft_targets(np.array([0.3, 0.4]), np.array([1]), 1.0, 0.5)


def test_expand_rows_weights_and_hard_labels():
    rows, labels, w = expand_rows(np.array([[0.25, 0.75], [1.0, 0.0]]))
    # row 1 has zero weight on class 1, so that copy is dropped
    assert sorted(zip(rows.tolist(), labels.tolist(), w.tolist())) == [(0, 0, 0.25), (0, 1, 0.75), (1, 0, 1.0)]
    rows, labels, w = expand_rows(one_hot([2, 0, 1], 3))
    assert sorted(rows.tolist()) == [0, 1, 2] and np.all(w == 1.0)
    assert dict(zip(rows.tolist(), labels.tolist())) == {0: 2, 1: 0, 2: 1}


def test_classifier_metrics_by_hand():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.1, 0.8, 0.4, 0.4])
    assert M.accuracy(y, p) == 0.75
    assert M.log_loss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.6])))
    assert M.brier_score(y, p) == pytest.approx(np.mean([0.01, 0.04, 0.36, 0.16]))
    # F1 of class 1: tp=1, predicted 1 = 1, actual 1 = 2 -> 2/3; of class 0: tp=2, predicted 3, actual 2 -> 4/5
    assert M.f1_score(y, p, average="binary") == pytest.approx(2 / 3)
    assert M.f1_score(y, p, average="macro") == pytest.approx((2 / 3 + 4 / 5) / 2)
    # AUC: pairs (pos, neg): (.8,.1)+ (.8,.4)+ (.4,.1)+ (.4,.4) tie -> (1+1+1+0.5)/4
    assert M.roc_auc(y, p) == pytest.approx(3.5 / 4)


def test_roc_auc_multiclass_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet(np.ones(3), 300) + np.eye(3)[y] * 0.3
    p /= p.sum(axis=1, keepdims=True)
    assert M.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert M.roc_auc(y == 1, p[:, 1]) == pytest.approx(roc_auc_score(y == 1, p[:, 1]))


def test_fusion_weights_prefer_the_informative_teacher():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    good = np.column_stack([np.where(y == 0, 0.85, 0.15), np.where(y == 1, 0.85, 0.15)])
    noise = rng.dirichlet([1, 1], 500)
    w = fusion.fit_weights([good, noise], y)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.9
    np.testing.assert_allclose(fusion.combine([good, noise], np.array([1.0, 0.0])), good)


def test_attention_weights_by_hand():
    a, b = np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]])
    np.testing.assert_allclose(fusion.attention_weights([a, b], 0.0), [[0.5, 0.5]])
    # confidence .9 vs .5, agreement equal (1 - TV of 0.4) -> weights softmax(beta * [.9, .5])
    w = fusion.attention_weights([a, b], 5.0)
    np.testing.assert_allclose(w, [np.exp([4.5, 2.5]) / np.exp([4.5, 2.5]).sum()])


def test_divergence_temperature_recovers_the_students_sharpness():
    rng = np.random.default_rng(2)
    teacher = rng.dirichlet([0.5, 0.5], 200)
    student = soften(teacher, 2.0)  # a student as smooth as the teacher at T = 2
    grid = [0.5, 1.0, 2.0, 3.0]
    assert DivergenceTemperature(keep=1).choose(teacher, student, grid) == [2.0]
    assert DivergenceTemperature(keep=2).choose(teacher, student, grid) == [2.0, 3.0]
    assert FixedGrid().choose(teacher, student, grid) == grid


def test_fusion_weights_minimise_the_registry_log_loss():
    """fit_weights optimises its own vectorised objective; the weights it finds are optimal for metrics.log_loss."""
    from hpm_ray.distill.fusion import combine, fit_weights

    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 400)
    a = rng.dirichlet(np.ones(3), 400) + 0.5 * np.eye(3)[y]
    b = rng.dirichlet(np.ones(3), 400) + 0.2 * np.eye(3)[y]
    probas = [a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)]
    w = fit_weights(probas, y)
    grid = min(M.log_loss(y, combine(probas, np.array([g, 1 - g]))) for g in np.linspace(0, 1, 201))
    assert M.log_loss(y, combine(probas, w)) <= grid + 1e-4  # L-BFGS stops near the simplex edge
