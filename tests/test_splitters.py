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
        b = wf.split(n)
    except DataError:
        assert n < wf.min_rows() + 4  # refused only when the rows really are too few
        return
    blocks = [b.train, b.validation, b.calibration, b.test]
    for earlier, later in zip(blocks, blocks[1:]):
        assert _min_gap(earlier, later) > horizon + embargo
    for i, earlier in enumerate(blocks):
        for later in blocks[i + 1:]:
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
    blocks = wf.split(n)
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
        splits = cv.split(n)
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
        PurgedWalkForward(60).split(300)


def test_bad_parameters_are_named():
    with pytest.raises(DataError, match="horizon must be >= 1"):
        PurgedWalkForward(0)
    with pytest.raises(DataError, match="embargo must be >= 0"):
        PurgedWalkForward(5, embargo=-1)
    with pytest.raises(DataError, match="n_test_groups"):
        CombinatorialPurgedCV(5, n_groups=3, n_test_groups=3)
