"""Drift checks against hand-computed PSI and KS values, and their refusals."""

import numpy as np
import pandas as pd
import pytest

from hpm_ray.drift.checks import categorical_psi, check_drift, ks_two_sample
from hpm_ray.errors import DataError


def test_ks_two_sample_by_hand():
    d, p = ks_two_sample(np.array([1.0, 2, 3]), np.array([4.0, 5, 6]))
    assert d == 1.0 and p < 0.1
    # F_a - F_b peaks at t in [2, 3): 0.5 - 0 = 0.5
    d, _ = ks_two_sample(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6]))
    assert d == 0.5
    d, p = ks_two_sample(np.arange(100.0), np.arange(100.0))
    assert d == 0.0 and p == 1.0


def test_ks_pvalue_separates_same_from_shifted():
    rng = np.random.default_rng(3)
    a = rng.normal(size=2000)
    assert ks_two_sample(a, rng.normal(size=2000))[1] > 0.01
    assert ks_two_sample(a, rng.normal(0.3, size=2000))[1] < 1e-6


def test_categorical_psi_by_hand_with_unseen_category():
    ref = pd.Series(["a"] * 50 + ["b"] * 50)
    cur = pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    floor = 1e-4
    pe = np.array([0.5, 0.5, floor])
    pa = np.array([0.5, 0.3, 0.2])
    assert categorical_psi(ref, cur) == pytest.approx(float(np.sum((pa - pe) * np.log(pa / pe))))
    assert categorical_psi(ref, ref.sample(frac=1.0, random_state=0)) == pytest.approx(0.0)


def _frame(n, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"x": rng.normal(shift, 1, n), "grade": rng.choice(["A", "B", "C"], n), "z": rng.uniform(0, 1, n)}
    )


def test_check_drift_flags_only_the_shifted_feature():
    ref = _frame(3000, seed=1)
    same = check_drift(ref, _frame(800, seed=2))
    assert not same.drifted and same.max_psi < 0.05
    cur = _frame(800, seed=3)
    cur["x"] += 1.0
    res = check_drift(ref, cur, reference_pred=ref["z"].to_numpy(), current_pred=cur["z"].to_numpy())
    flagged = {f.feature for f in res.features if f.drifted}
    assert flagged == {"x"} and res.drifted and not res.prediction.drifted
    assert res.to_dict()["drifted"] is True and res.to_dict()["features"][0]["ks_pvalue"] < 1e-6


def test_check_drift_refusals():
    ref = _frame(500)
    with pytest.raises(DataError, match="only 10 served row"):
        check_drift(ref, _frame(10))
    with pytest.raises(DataError, match="lack feature.*'grade'"):
        check_drift(ref, _frame(200).drop(columns=["grade"]))
    with pytest.raises(DataError, match="threshold must be > 0"):
        check_drift(ref, _frame(200), threshold=0)
