"""Purged splitters: no training or validation row within horizon + embargo of a later block (property tests)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpm_ray.data.splitters import CombinatorialPurgedCV, PurgedWalkForward
from hpm_ray.errors import DataError


def _min_gap(earlier: np.ndarray, later: np.ndarray) -> int:
    """Smallest (later start - earlier row) over rows that come before ``later``."""
    return int(later.min() - earlier.max())


@settings(max_examples=200, deadline=None)
@given(n=st.integers(200, 20_000), horizon=st.integers(1, 80), embargo=st.integers(0, 80))
def test_walk_forward_blocks_are_ordered_and_purged(n, horizon, embargo):
    wf = PurgedWalkForward(horizon, embargo=embargo, min_block=10)
    try:
        b = wf.blocks(n)
    except DataError:
        assert n < wf.min_rows() + 4  # refused only when the rows really are too few
        return
    blocks = [b.train, b.validation, b.calibration, b.test]
    for earlier, later in zip(blocks, blocks[1:]):
        assert _min_gap(earlier, later) > horizon + embargo
    for i, earlier in enumerate(blocks):
        for later in blocks[i + 1 :]:
            # Every earlier row's label window (i, i + h] plus the embargo ends before the later block.
            assert earlier.max() + horizon + embargo < later.min()
    assert all(len(x) >= 10 for x in blocks)
    assert b.test.max() < n
    assert len(np.unique(np.concatenate(blocks))) == sum(map(len, blocks))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(500, 20_000), horizon=st.integers(1, 60), n_folds=st.integers(1, 4))
def test_walk_forward_folds_purge_training_rows(n, horizon, n_folds):
    wf = PurgedWalkForward(horizon, min_block=10)
    try:
        folds = wf.folds(n, n_folds)
    except DataError:
        return
    blocks = wf.blocks(n)
    for train, val in folds:
        assert train.max() + 2 * horizon < val.min()  # default embargo = horizon
        assert val.max() < blocks.calibration.min() - 2 * horizon  # folds never reach calibration or test
    starts = [v.min() for _, v in folds]
    assert starts == sorted(starts)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(300, 5_000), horizon=st.integers(1, 20), groups=st.integers(3, 7), k=st.integers(1, 2))
def test_cpcv_purges_both_sides_of_each_test_group(n, horizon, groups, k):
    cv = CombinatorialPurgedCV(horizon, n_groups=groups, n_test_groups=min(k, groups - 1))
    try:
        splits = cv.pairs(n)
    except DataError:
        return
    from math import comb

    assert len(splits) == comb(groups, min(k, groups - 1))
    for train, test in splits:
        assert len(np.intersect1d(train, test)) == 0
        # distance from every training row to the nearest test row exceeds horizon + embargo
        pos = np.searchsorted(test, train)
        left = np.abs(train - test[np.clip(pos - 1, 0, len(test) - 1)])
        right = np.abs(test[np.clip(pos, 0, len(test) - 1)] - train)
        assert np.minimum(left, right).min() > 2 * horizon


def test_walk_forward_refuses_too_few_rows_with_the_numbers():
    with pytest.raises(DataError, match=r"300 rows are too few for horizon 60.*at least \d+"):
        PurgedWalkForward(60).blocks(300)


def test_bad_parameters_are_named():
    with pytest.raises(DataError, match="horizon must be >= 1"):
        PurgedWalkForward(0)
    with pytest.raises(DataError, match="embargo must be >= 0"):
        PurgedWalkForward(5, embargo=-1)
    with pytest.raises(DataError, match="n_test_groups"):
        CombinatorialPurgedCV(5, n_groups=3, n_test_groups=3)


@pytest.mark.parametrize(
    "cv", [PurgedWalkForward(5, min_block=10, n_folds=3), CombinatorialPurgedCV(5, n_groups=5, n_test_groups=2)]
)
def test_sklearn_cross_validate_uses_the_purged_splits(cv):
    """Both splitters are scikit-learn CVs: cross_validate fits one model per split, on the purged indices."""
    from sklearn.base import clone
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import BaseCrossValidator, check_cv, cross_validate

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.1, size=600)
    assert isinstance(cv, BaseCrossValidator) and check_cv(cv) is cv
    out = cross_validate(Ridge(), X, y, cv=cv, return_indices=True, return_estimator=True)
    pairs = cv.folds(len(X)) if isinstance(cv, PurgedWalkForward) else cv.pairs(len(X))
    assert cv.get_n_splits(X) == len(pairs) == len(out["test_score"])
    for (train, test), got_train, got_test, model, score in zip(
        pairs, out["indices"]["train"], out["indices"]["test"], out["estimator"], out["test_score"]
    ):
        np.testing.assert_array_equal(got_train, train)
        np.testing.assert_array_equal(got_test, test)
        # no training row within horizon + embargo (= 10) of a test row, on either side
        assert np.abs(got_train[:, None] - got_test[None, :]).min() > 10
        np.testing.assert_allclose(model.coef_, clone(Ridge()).fit(X[train], y[train]).coef_)
        assert score == pytest.approx(r2_score(y[test], model.predict(X[test])))


def test_walk_forward_split_is_the_hpo_folds_and_never_reaches_calibration():
    wf = PurgedWalkForward(4, min_block=10, n_folds=2)
    blocks = wf.blocks(800)
    folds = list(wf.split(np.zeros((800, 1))))
    assert len(folds) == 2 and np.array_equal(np.concatenate([v for _, v in folds]), blocks.validation)
    assert max(t.max() for t, _ in folds) < blocks.validation.max()
    assert all(v.max() < blocks.calibration.min() for _, v in folds)


def test_docstring_examples_run():
    import doctest

    from hpm_ray.data import splitters

    assert doctest.testmod(splitters).failed == 0
