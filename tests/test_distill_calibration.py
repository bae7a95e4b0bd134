"""Served student probabilities (no Ray): the temperature undone, a calibrator chosen on validation rows."""

import pickle

import numpy as np
import pytest

from hpm_ray.distill.calibration import CalibratedStudent, choose_method, scores_to_proba, unsoftened_scores
from hpm_ray.distill.soft_targets import soft_targets, soften


def test_undoing_the_temperature_is_exact_for_pure_teacher_targets():
    # soften([0.2, 0.8], T=2) = sigmoid(log(4) / 2) = 2/3 for class 1; times T gives back log-odds log(4)
    soft = soften(np.array([[0.2, 0.8]]), 2.0)
    assert soft[0, 1] == pytest.approx(2 / 3)
    assert unsoftened_scores(soft, 2.0)[0, 0] == pytest.approx(np.log(4.0))
    p3 = np.array([[0.2, 0.5, 0.3], [0.05, 0.05, 0.9]])
    np.testing.assert_allclose(scores_to_proba(unsoftened_scores(soften(p3, 0.5), 0.5)), p3)


def test_the_chosen_calibrator_fits_a_shifted_and_stretched_score():
    """Truth p = sigmoid(2 z - 1): Platt (slope and intercept) must beat no calibration and temperature alone."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 1))
    y = (rng.random(3000) < 1 / (1 + np.exp(-(2 * z[:, 0] - 1)))).astype(int)
    brier = choose_method(z, y, 2)
    assert set(brier) == {"none", "temperature", "sigmoid", "isotonic"}
    assert brier["sigmoid"] < brier["temperature"] < brier["none"]
    y_rare = np.r_[np.ones(1), np.zeros(99)].astype(int)  # one positive: nothing can be cross-fitted
    assert set(choose_method(rng.normal(size=(100, 1)), y_rare, 2)) == {"none"}


@pytest.fixture(scope="module")
def credit_splits():
    """4,000 credit rows: 2,000 train (with a cross-fitted LightGBM teacher), 1,000 validation, 1,000 test."""
    import lightgbm as lgb
    from sklearn.model_selection import cross_val_predict

    from hpm_ray.data.datasets import load_credit_default

    X, y = load_credit_default()
    X, y = X.iloc[:4000].reset_index(drop=True), y.iloc[:4000].to_numpy()
    tr, va, te = slice(0, 2000), slice(2000, 3000), slice(3000, 4000)
    teacher = cross_val_predict(
        lgb.LGBMClassifier(n_estimators=100, verbose=-1, n_jobs=1), X[tr], y[tr], cv=3, method="predict_proba"
    )
    return X[tr], y[tr], teacher, X[va], y[va], X[te], y[te]


def test_a_t3_student_served_calibrated_predicts_the_base_rate(credit_splits):
    """Done-when 2: at T = 3 the raw student's mean probability is far above the validation base rate (the
    softened targets pull every row towards 0.5); served calibrated it is within 0.02 of it on test rows."""
    from hpm_ray.distill.catalog import make_student

    X_tr, y_tr, teacher, X_va, y_va, X_te, _ = credit_splits
    student = make_student("lgbm").fit(X_tr, y_tr, soft_targets=soft_targets(teacher, y_tr, 3.0, 0.9))
    served = CalibratedStudent(student, temperature=3.0).fit(X_va, y_va)
    base = y_va.mean()
    assert student.predict_proba(X_te)[:, 1].mean() - base > 0.04
    p = served.predict_proba(X_te)
    assert abs(p[:, 1].mean() - base) < 0.02
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert served.method_ == min(served.cv_brier_, key=served.cv_brier_.get)
    # a scikit-learn classifier, as the registry's pyfunc expects, and it survives pickling
    assert list(served.classes_) == [0, 1] and served.get_params()["temperature"] == 3.0
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(served)).predict_proba(X_te.head(5)), p[:5])


def test_multiclass_students_are_served_with_probabilities_that_sum_to_one():
    import pandas as pd

    from hpm_ray.distill.catalog import make_student

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=900), "b": rng.normal(size=900)})
    y = np.clip((X.a > 0).astype(int) + (X.b > 0.5).astype(int), 0, 2).to_numpy()
    teacher = np.eye(3)[y] * 0.7 + 0.1
    student = make_student("logreg").fit(X[:600], y[:600], soft_targets=soft_targets(teacher[:600], y[:600], 2.0, 0.7))
    served = CalibratedStudent(student, temperature=2.0).fit(X[600:800], y[600:800])
    p = served.predict_proba(X[800:])
    assert p.shape == (100, 3) and np.allclose(p.sum(axis=1), 1.0)
    assert np.mean(served.predict(X[800:]) == y[800:]) > 0.6
