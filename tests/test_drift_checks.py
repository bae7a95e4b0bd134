"""Drift checks against hand-computed PSI, KS, chi-square, Fisher and Benjamini-Hochberg values; the alarm
rule; their refusals."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hpm_ray.drift.checks import (
    DEFAULT_THRESHOLD,
    categorical_psi,
    category_counts,
    check_drift,
    chi2_pvalue,
    is_categorical,
    ks_two_sample,
    missing_rate_pvalue,
)
from hpm_ray.errors import DataError
from hpm_ray.metrics import psi


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


def test_psi_missing_values_have_their_own_bin():
    ref = np.arange(100.0)  # deciles: 10 values a bin
    cur = np.r_[np.arange(0.0, 100.0, 2.0), np.full(50, np.nan)]  # 5 values a bin, half missing
    floor = 1e-4
    by_hand = 10 * (0.05 - 0.1) * np.log(0.05 / 0.1) + (0.5 - floor) * np.log(0.5 / floor)
    assert psi(ref, cur) == pytest.approx(by_hand)
    assert psi(ref, cur[~np.isnan(cur)]) < 0.01  # what dropping the missing values used to show
    assert psi(np.full(10, np.nan), np.ones(10)) == pytest.approx((1 - floor) * np.log(1 / floor) * 2)


def test_category_counts_match_integer_codes_and_count_missing_and_unseen():
    e, a = category_counts(pd.Series([1, 1, 2, 2]), pd.Series([1.0, 2.0, 3.0, np.nan]))
    assert e.tolist() == [2, 2, 0, 0] and a.tolist() == [1, 1, 1, 1]  # [1, 2, unseen, missing]
    e, a = category_counts(pd.Series([1, 2]), pd.Series(["1", "x"]))  # served text that is not a number: missing
    assert e.tolist() == [1, 1, 0, 0] and a.tolist() == [1, 0, 0, 1]
    e, a = category_counts(pd.Series(["a", None, "b"]), pd.Series(["b", "c", None, None]))
    assert e.tolist() == [1, 1, 0, 1] and a.tolist() == [0, 1, 1, 2]


def test_missing_rate_pvalue_by_hand():
    # [[0, 5], [5, 0]]: the most extreme of C(10, 5) = 252 tables with these margins, on each side
    assert missing_rate_pvalue(0, 5, 5, 5) == pytest.approx(2 / 252)
    assert missing_rate_pvalue(0, 100, 0, 50) is None  # nothing missing anywhere: no test
    assert missing_rate_pvalue(100, 100, 50, 50) is None
    assert missing_rate_pvalue(5, 100, 3, 60) > 0.5


def test_chi2_pvalue_groups_sparse_categories_by_hand():
    # the third category is expected 0.5 times in the smaller sample: grouped with the next rarest (80)
    table = np.array([[51.0, 50.0], [30.0, 70.0]])
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = ((table - expected) ** 2 / expected).sum()
    assert chi2_pvalue([50, 50, 1], [30, 70, 0]) == pytest.approx(stats.chi2.sf(stat, 1))
    assert chi2_pvalue([100, 0], [50, 0]) is None  # one category: nothing to compare
    # 30 categories expected about 3 times each: groups of two, not one column with nothing to test
    assert chi2_pvalue(np.full(30, 100), np.r_[np.zeros(29), 100]) < 1e-10
    assert chi2_pvalue([100, 0], [0, 0]) is None


def test_which_columns_are_categorical():
    assert is_categorical(pd.Series([1, 2, 3] * 10))
    assert is_categorical(pd.Series([1.0, np.nan, 2.0]))  # integer codes made float by a missing value
    assert not is_categorical(pd.Series(range(21)))
    assert not is_categorical(pd.Series([1, 2, 3]), max_categories=0)
    assert not is_categorical(pd.Series([0.5, 1.5] * 10))
    assert is_categorical(pd.Series(["a", "b"])) and is_categorical(pd.Series([True, False]))
    ref = pd.DataFrame({"code": np.arange(300) % 30, "grade": np.arange(300) % 3})
    res = check_drift(ref, ref, categorical=["code"])
    assert [(f.kind, f.ks_pvalue is None, f.chi2_pvalue) for f in res.features] == [
        ("categorical", True, pytest.approx(1.0)),
        ("categorical", True, pytest.approx(1.0)),
    ]


def _bh(ps):
    """Benjamini-Hochberg adjusted p-values, written out: min over j >= rank of m p_(j) / j."""
    ps = np.asarray(ps)
    order = np.argsort(ps)
    scaled = ps[order] * len(ps) / np.arange(1, len(ps) + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty_like(ps)
    out[order] = np.minimum(adjusted, 1)
    return out


def test_q_values_are_benjamini_hochberg_over_all_tests_of_the_window():
    ref = _frame(3000, seed=1)
    cur = _frame(800, seed=4)
    cur["x"] += 0.15
    cur.loc[:99, "z"] = np.nan
    res = check_drift(ref, cur, reference_pred=ref["z"].to_numpy(), current_pred=cur["x"].to_numpy())
    ps = [p for f in res.checked for p in f.pvalues]
    assert len(ps) == 5  # KS x, chi2 grade, KS z, missing z, KS prediction
    adjusted = iter(_bh(ps))
    for f in res.checked:
        assert f.q_value == pytest.approx(min(next(adjusted) for _ in f.pvalues))


def test_alarm_needs_both_evidence_and_size():
    rng = np.random.default_rng(5)
    big = check_drift(pd.DataFrame({"x": rng.normal(size=20_000)}), pd.DataFrame({"x": rng.normal(0.1, 1, 20_000)}))
    (x,) = big.features
    assert x.q_value < 1e-6 and x.psi < DEFAULT_THRESHOLD and not big.drifted  # significant but small
    ref = pd.DataFrame({"c": rng.choice([f"k{i}" for i in range(30)], 3000)})
    small = check_drift(ref, pd.DataFrame({"c": rng.choice([f"k{i}" for i in range(30)], 100)}))
    (c,) = small.features
    assert c.psi >= DEFAULT_THRESHOLD and c.q_value > 0.05 and not small.drifted  # large by chance alone


def test_check_drift_refuses_a_bad_fdr_and_unknown_categorical_features():
    ref = _frame(500)
    with pytest.raises(DataError, match=r"fdr\) must be in \(0, 1\), got 1.5"):
        check_drift(ref, _frame(200), fdr=1.5)
    with pytest.raises(DataError, match="categorical feature.*'zip'.*not features"):
        check_drift(ref, _frame(200), categorical=["zip"])
